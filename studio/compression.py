"""Gzip for a response whose large head repeats from request to request: metrics.json starts with
the run's cached series (about 1 MB of JSON for 1000 points x 40 curves), whose compression cost
43 ms of the request's 46 (bench/viewers.py, GZipMiddleware at level 6).

The head is deflated once and the compressor's state kept (`zlib` compressors can be copied); each
request copies it, deflates only its own small tail and closes the stream, with the CRC-32 of the
whole body carried on from the head's. The result is one ordinary gzip member (RFC 1952), the same
bytes a browser would get from compressing the whole body at once with that state.
"""

from __future__ import annotations

import functools
import re
import struct
import zlib
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.utils.cache import patch_vary_headers

# ID1 ID2, CM = deflate, no flags, MTIME 0 (as Django's own compress_string), XFL 0, OS unknown
GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
LEVEL = 6  # GZipMiddleware's
CACHED_HEADS = 32  # as many as studio.series keeps runs
ACCEPTS_GZIP = re.compile(r"\bgzip\b")


@dataclass(frozen=True)
class DeflatedHead:
    compressor: Any  # zlib's compressor after the head: copied, never used itself
    deflated: bytes
    crc: int
    size: int


@functools.lru_cache(maxsize=CACHED_HEADS)
def deflated_head(head: str) -> DeflatedHead:
    """`head` deflated once (keyed by the cached text itself, whose hash Python keeps)."""
    data = head.encode()
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    return DeflatedHead(compressor, compressor.compress(data), zlib.crc32(data), len(data))


def gzip_after(head: DeflatedHead, tail: bytes) -> bytes:
    """The gzip stream of the head's bytes followed by `tail`."""
    compressor = head.compressor.copy()
    rest = compressor.compress(tail) + compressor.flush()
    trailer = struct.pack("<II", zlib.crc32(tail, head.crc), (head.size + len(tail)) & 0xFFFFFFFF)
    return GZIP_HEADER + head.deflated + rest + trailer


def accepts_gzip(request: HttpRequest) -> bool:
    return bool(ACCEPTS_GZIP.search(request.META.get("HTTP_ACCEPT_ENCODING", "")))


def response_with_head(request: HttpRequest, head: str, tail: str, content_type: str) -> HttpResponse:
    """`head + tail` as a response, gzipped with the head's compression reused when the client takes
    gzip (GZipMiddleware leaves a response that has its Content-Encoding alone)."""
    if not accepts_gzip(request):
        return HttpResponse(head + tail, content_type=content_type)
    response = HttpResponse(gzip_after(deflated_head(head), tail.encode()), content_type=content_type)
    response["Content-Encoding"] = "gzip"
    patch_vary_headers(response, ("Accept-Encoding",))
    return response
