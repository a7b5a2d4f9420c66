"""Riding out a database that is briefly away (a restart, a failover, a dropped connection).

Django raises OperationalError or InterfaceError when the server is unreachable or the connection
broke; both mean "try again on a new connection". Anything else (an IntegrityError, bad data) is
not transient and is raised at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from django.db import InterfaceError, OperationalError, connection

log = logging.getLogger(__name__)
TRANSIENT_DB_ERRORS = (OperationalError, InterfaceError)
T = TypeVar("T")


class DatabaseUnavailable(RuntimeError):
    """The database stayed unreachable for longer than the caller would wait."""


def backoff_delays(first: float = 0.25, most: float = 5.0) -> Iterator[float]:
    """0.25, 0.5, 1, 2, 4, 5, 5, ... seconds: quick for a hiccup, gentle on a server coming back."""
    delay = first
    while True:
        yield delay
        delay = min(delay * 2, most)


def retry_transient(
    action: Callable[[], T], *, budget_s: float, what: str, give_up: Callable[[], str | None] = lambda: None
) -> T:
    """action()'s value, calling it again after each transient database error (on a fresh
    connection, after a backoff) for up to `budget_s` seconds from the first failure; then
    DatabaseUnavailable, naming `what` and how long the database was away. `give_up()` may end the
    wait sooner: it returns why (a memory bound reached) or None to keep trying."""
    first_failure: float | None = None
    delays = backoff_delays()
    while True:
        try:
            return action()
        except TRANSIENT_DB_ERRORS as exc:
            connection.close()  # the next attempt reconnects
            now = time.monotonic()
            first_failure = now if first_failure is None else first_failure
            away = now - first_failure
            reason = f"the limit is {budget_s:g} s" if away >= budget_s else give_up()
            if reason:
                raise DatabaseUnavailable(
                    f"{what}: the database has been unreachable for {away:.0f} s ({exc}); {reason}"
                ) from exc
            delay = min(next(delays), budget_s - away)
            log.warning("%s: the database is unreachable (%s); trying again in %.2f s", what, exc, delay)
            time.sleep(delay)
