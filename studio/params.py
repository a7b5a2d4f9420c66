"""Query parameters and small request bodies, read strictly: a malformed one is a 400 that names it.

Views read parameters with these helpers and wear `@answers_bad_parameters`, which turns the
`BadParameter` they raise into a 400: JSON `{"error": "<name>: <why>", "field": "<name>"}` for
JSON endpoints, a one-line text page for the others. Nothing malformed reaches the database: a
NUL character or a number past the 64-bit columns would otherwise be a server error there.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict

MAX_ID = 2**63 - 1  # the primary keys are 64-bit
MAX_STEP = 2**31 - 1  # steps are 32-bit columns
MAX_IDS = 50  # ids in one repeated parameter (?run=1&run=2...)
MAX_JSON_BODY = 4_096  # a JSON command body is {"kind": "pause"}


class BadParameter(ValueError):
    """A malformed parameter: `name` is the parameter (or "body"), the message says why."""

    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__(f"{name}: {message}")


def answers_bad_parameters(*, json_body: bool) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Turn a `BadParameter` raised by the view into a 400 (JSON when `json_body`, else text)."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            try:
                return view(request, *args, **kwargs)
            except BadParameter as bad:
                if json_body:
                    return JsonResponse({"error": str(bad), "field": bad.name}, status=400)
                return HttpResponse(str(bad), status=400, content_type="text/plain; charset=utf-8")

        return wrapper

    return decorate


def int_param(
    query: QueryDict, name: str, default: int, *, low: int = 0, high: int = MAX_STEP, clamp: bool = False
) -> int:
    """`?name=<whole number>` in low..high (absent or empty: `default`). With `clamp`, a well-formed
    number outside the range is moved into it (a documented "at most" of the API); else it is refused."""
    raw = query.get(name, "")
    if raw == "":
        return default
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 19:
        raise BadParameter(name, f"must be a whole number from {low} to {high}")
    value = int(raw)
    if low <= value <= high:
        return value
    if clamp:
        return min(max(value, low), high)
    raise BadParameter(name, f"must be a whole number from {low} to {high}")


def id_params(query: QueryDict, name: str) -> list[int]:
    """`?name=<id>&name=<id>...`: at most MAX_IDS ids, each a positive whole number."""
    raws = query.getlist(name)
    if len(raws) > MAX_IDS:
        raise BadParameter(name, f"at most {MAX_IDS} ids")
    ids = []
    for raw in raws:
        if not (raw.isascii() and raw.isdigit()) or len(raw) > 19 or not 1 <= int(raw) <= MAX_ID:
            raise BadParameter(name, "must be an id (a whole number from 1)")
        ids.append(int(raw))
    return ids


def optional_id_param(query: QueryDict, name: str) -> int | None:
    """`?name=<id>` or nothing (absent or empty)."""
    if query.get(name, "") == "":
        return None
    if len(query.getlist(name)) > 1:
        raise BadParameter(name, "give one id")
    return id_params(query, name)[0]


def text_param(query: QueryDict, name: str, *, max_chars: int = 200, choices: tuple[str, ...] = ()) -> str:
    """`?name=<text>` (absent: ""): at most `max_chars` characters, no NUL, and one of `choices` if given."""
    raw = query.get(name, "")
    if len(raw) > max_chars or "\x00" in raw:
        raise BadParameter(name, f"must be text of at most {max_chars} characters, without NUL")
    if raw and choices and raw not in choices:
        raise BadParameter(name, f"must be one of {', '.join(choices)}")
    return raw


def json_object_body(request: HttpRequest, max_bytes: int = MAX_JSON_BODY) -> dict[str, Any]:
    """A JSON object body ({} when empty): at most `max_bytes` bytes, nested as deep as Python's
    json decoder allows (deeper is refused, not a RecursionError)."""
    body = request.body  # over DATA_UPLOAD_MAX_MEMORY_SIZE: Django answers 400 itself
    if len(body) > max_bytes:
        raise BadParameter("body", f"at most {max_bytes:,} bytes of JSON")
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except RecursionError:
        raise BadParameter("body", "JSON nested too deeply") from None
    except ValueError:  # also UnicodeDecodeError
        raise BadParameter("body", "not valid JSON") from None
    if not isinstance(value, dict):
        raise BadParameter("body", 'must be a JSON object, like {"kind": "pause"}')
    return value
