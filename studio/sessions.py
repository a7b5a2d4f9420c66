"""The session store (settings.SESSION_ENGINE): Django's database sessions, except for a session
that could not be saved because the database is away.

Django's store turns any database error of an update into UpdateError, which its session
middleware answers with 400 "SessionInterrupted: the request's session was deleted before the
request completed" (the case it means: a logout in a concurrent request). A server that is gone
raises its OperationalError (or InterfaceError) here instead, so that the studio answers 503 with a
retry hint (studio.middleware.DatabaseUnavailableMiddleware) and the person keeps their session.
"""

from __future__ import annotations

from django.contrib.sessions.backends import db
from django.contrib.sessions.backends.base import UpdateError

from studio.middleware import DATABASE_ERRORS


class SessionStore(db.SessionStore):
    def save(self, must_create: bool = False) -> None:
        try:
            super().save(must_create=must_create)
        except UpdateError as refused:
            if isinstance(refused.__context__, DATABASE_ERRORS):
                raise refused.__context__ from None
            raise
