"""Three pieces of the studio's answer to outsiders: one 404 for everything missing or forbidden, a
503 while the database is away, and the Content-Security-Policy with this origin's websockets in it.

404: a view raises Http404 both for an object that does not exist and for one the person may not
see (studio.permissions). Django's debug page (DEBUG on, what `make up` runs) would print each
exception's own message ("No Run matches the given query." vs "No such run") and so tell the two
apart; `NotFoundMiddleware` answers every Http404 of a view with the same body whatever DEBUG is:
`{"error": "Not found."}` under /api/ and for *.json endpoints, else the 404.html page rendered
without the request (no username, no CSRF token: the same bytes for everyone).

503: a database that is restarting or unreachable makes every query raise OperationalError (or
InterfaceError on a connection it dropped). `DatabaseUnavailableMiddleware` answers those with 503 and
a Retry-After header, `{"error": ..., "retry_after": s}` for the API and JSON endpoints, else the
503.html page, rendered without the request (the session and the user live in the database). It sits
right below the security and CSP middleware, whose headers the 503 keeps, and above every middleware
that reads the database (the session's, the user's): Django turns an error raised in a middleware
into a 500 response before the one above it sees it, so the error is noted on the request as Django
reports it (`got_request_exception`) and that 500 is answered as a 503. Django's session store
reports a session it could not save as deleted meanwhile (a 400, "SessionInterrupted") whatever
the cause; studio.sessions raises the database error instead.
"""

from __future__ import annotations

import logging
import sys

from csp.middleware import CSPMiddleware, PolicyParts
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.signals import got_request_exception
from django.db import InterfaceError, OperationalError
from django.dispatch import receiver
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseNotFound, JsonResponse
from django.template import loader

log = logging.getLogger(__name__)
NOT_FOUND_MESSAGE = "Not found."
DATABASE_RETRY_AFTER_S = 10
DATABASE_AWAY_MESSAGE = f"The studio's database is not answering; try again in {DATABASE_RETRY_AFTER_S} seconds."
DATABASE_ERRORS = (OperationalError, InterfaceError)  # the server is unreachable or dropped the connection


def wants_json(request: HttpRequest) -> bool:
    return request.path_info.startswith("/api/") or request.path_info.endswith(".json")


def not_found_response(request: HttpRequest) -> HttpResponse:
    """The one 404 of the studio (API and JSON endpoints: JSON; pages: 404.html)."""
    if wants_json(request):
        return JsonResponse({"error": NOT_FOUND_MESSAGE}, status=404)
    return HttpResponseNotFound(loader.render_to_string("404.html"))


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    """handler404 (DEBUG off, also for URLs that match no route): the same response."""
    return not_found_response(request)


class NotFoundMiddleware:
    """Every Http404 raised by a view becomes `not_found_response`, with DEBUG on or off."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, Http404):
            return not_found_response(request)
        return None


def database_unavailable_response(request: HttpRequest) -> HttpResponse:
    """503 with Retry-After (API and JSON endpoints: JSON; pages: 503.html)."""
    if wants_json(request):
        response = JsonResponse({"error": DATABASE_AWAY_MESSAGE, "retry_after": DATABASE_RETRY_AFTER_S}, status=503)
    else:
        context = {"retry_after": DATABASE_RETRY_AFTER_S}
        response = HttpResponse(loader.render_to_string("503.html", context), status=503)
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_S)
    response.setdefault("X-Frame-Options", settings.X_FRAME_OPTIONS)  # its middleware is below this one
    return response


class DatabaseUnavailableMiddleware:
    """A request that could not reach the database answers 503 with a retry hint, not 500: from a
    view (`process_exception`) or from a middleware below this one (`database_error_of`)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        error = database_error_of(request)
        if error is not None and response.status_code == 500:
            log.warning("database unavailable for %s %s (in a middleware): %s", request.method, request.path, error)
            return database_unavailable_response(request)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, DATABASE_ERRORS):
            log.warning("database unavailable for %s %s: %s", request.method, request.path, exception)
            return database_unavailable_response(request)
        return None


def database_error_of(request: HttpRequest) -> Exception | None:
    """The database error that turned this request into a 500, if one did (`_note_database_error`)."""
    return getattr(request, "_studio_database_error", None)


@receiver(got_request_exception)
def _note_database_error(sender, request: HttpRequest | None = None, **kwargs) -> None:
    """Django sends this from inside its handling of the exception (asgiref re-raises it in the
    thread it hands the handling to), so the exception is the one being handled."""
    error = sys.exc_info()[1]
    if request is not None and isinstance(error, DATABASE_ERRORS):
        request._studio_database_error = error


class ContentSecurityPolicyMiddleware(CSPMiddleware):
    """settings.CONTENT_SECURITY_POLICY, with connect-src extended by this host's websocket origin
    (browsers older than CSP level 3 do not count ws:// and wss:// as 'self')."""

    def get_policy_parts(
        self, request: HttpRequest, response: HttpResponseBase, report_only: bool = False
    ) -> PolicyParts:
        parts = super().get_policy_parts(request, response, report_only)
        try:
            host = request.get_host()
        except DisallowedHost:  # answered 400 already; the policy keeps 'self' alone
            return parts
        socket = f"{'wss' if request.is_secure() else 'ws'}://{host}"
        update = dict(parts.update or {})
        update["connect-src"] = [*update.get("connect-src", []), socket]
        parts.update = update
        return parts
