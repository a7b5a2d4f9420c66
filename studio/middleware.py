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
503.html page, rendered without the request (the session and the user live in the database). The
response still passes through the security, CSP and frame-options middleware above it.
"""

from __future__ import annotations

import logging

from csp.middleware import CSPMiddleware, PolicyParts
from django.core.exceptions import DisallowedHost
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseNotFound, JsonResponse
from django.template import loader

log = logging.getLogger(__name__)
NOT_FOUND_MESSAGE = "Not found."
DATABASE_RETRY_AFTER_S = 10
DATABASE_AWAY_MESSAGE = f"The studio's database is not answering; try again in {DATABASE_RETRY_AFTER_S} seconds."


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
    return response


class DatabaseUnavailableMiddleware:
    """A view that could not reach the database answers 503 with a retry hint, not 500."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, (OperationalError, InterfaceError)):
            log.warning("database unavailable for %s %s: %s", request.method, request.path, exception)
            return database_unavailable_response(request)
        return None


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
