"""Login throttling hooks for django-axes (settings AXES_CLIENT_IP_CALLABLE, AXES_LOCKOUT_CALLABLE).

Axes counts failed logins per (username, client address) and, past PRORL_LOGIN_FAILURE_LIMIT,
refuses that pair until PRORL_LOGIN_COOLOFF_S seconds after its last failure; `locked_out` is the
page it then answers with. Behind PRORL_PROXY_COUNT reverse proxies the client's address is the one
the outermost proxy appended to X-Forwarded-For: entries left of it are whatever the client sent.
"""

from __future__ import annotations

import math

from axes.helpers import get_client_username, get_cool_off
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def client_ip(request: HttpRequest) -> str:
    """The address logins are counted against: REMOTE_ADDR, or behind proxies the entry of
    X-Forwarded-For written by the first proxy (`PROXY_COUNT` from the right)."""
    count = settings.PROXY_COUNT
    forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
    if count > 0 and len(forwarded) >= count:
        return forwarded[-count]
    return request.META.get("REMOTE_ADDR", "")


def locked_out(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict | None = None
) -> HttpResponse:
    """429 with the studio's page: who is locked out, for how long, and that others are not."""
    cool_off = get_cool_off(request)
    seconds = int(cool_off.total_seconds()) if cool_off else 0
    context = {
        "username": get_client_username(request, credentials) or "",
        "failure_limit": settings.AXES_FAILURE_LIMIT,
        "minutes": max(1, math.ceil(seconds / 60)),
    }
    response = render(request, "registration/locked_out.html", context, status=429)
    response["Retry-After"] = str(seconds)
    return response
