"""Compressed JSON answers for clients that accept gzip.

A list of 20 backups is ~50 KB of JSON. Uncompressed, a client reads it in five or six socket reads; a
Python client (the official SDK is one) gives up its interpreter lock on each read and waits to take
it back, behind its other threads, every time. Compressed (~6 KB), the same answer arrives in one or
two reads, and inflating it costs the client far less than the waits it saves. Measured by
``bench/api.py`` (20 SDK clients in one process): see bench/README.md, "Compressed answers".

Only whole JSON bodies are compressed (one ``http.response.body`` message, as ``JSONResponse`` sends):
streamed answers (a disk export, event streams) pass through untouched, so the API never spends CPU
compressing backup data that is already compressed, and a client reading a stream is never made to
wait for it to be buffered.
"""

from __future__ import annotations

import zlib

# Below one TCP segment's worth, compressing saves no read.
MIN_COMPRESSED_BYTES = 1400
# Level 1: ~5x on our JSON at a fraction of the default level's CPU (the API's CPU is shared with
# every request).
GZIP_LEVEL = 1


def accepts_gzip(headers: list[tuple[bytes, bytes]]) -> bool:
    """``Accept-Encoding`` names gzip with a non-zero quality (RFC 9110 12.5.3)."""
    for key, value in headers:
        if key.lower() != b"accept-encoding":
            continue
        for item in value.decode("latin-1").split(","):
            coding, _, params = item.strip().partition(";")
            if coding.strip().lower() in ("gzip", "x-gzip", "*"):
                quality = params.strip().lower()
                return not quality.startswith("q=") or _quality(quality[2:]) > 0
    return False


def _quality(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def gzip_bytes(body: bytes) -> bytes:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # wbits 31: a gzip member
    return compressor.compress(body) + compressor.flush()


class CompressJSON:
    """Plain ASGI middleware: gzip whole ``application/json`` bodies of ``MIN_COMPRESSED_BYTES`` or more."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not accepts_gzip(scope["headers"]):
            return await self.app(scope, receive, send)
        held: dict | None = None

        async def send_compressed(message):
            nonlocal held
            if message["type"] == "http.response.start":
                if _is_plain_json(message["headers"]):
                    held = message  # decided when the body comes: whole and big enough?
                    return
                return await send(message)
            if held is None or message["type"] != "http.response.body":
                return await send(message)
            start, held = held, None
            body = message.get("body", b"")
            if message.get("more_body") or len(body) < MIN_COMPRESSED_BYTES:
                await send(start)
                return await send(message)
            packed = gzip_bytes(body)
            await send({**start, "headers": _compressed_headers(start["headers"], len(packed))})
            await send({"type": "http.response.body", "body": packed})

        await self.app(scope, receive, send_compressed)


def _is_plain_json(headers) -> bool:
    kinds = [v for k, v in headers if k.lower() == b"content-type"]
    encoded = any(k.lower() == b"content-encoding" for k, _ in headers)
    return not encoded and bool(kinds) and kinds[0].split(b";")[0].strip().lower() == b"application/json"


def _compressed_headers(headers, length: int) -> list[tuple[bytes, bytes]]:
    kept = [(k, v) for k, v in headers if k.lower() not in (b"content-length", b"vary")]
    vary = [v for k, v in headers if k.lower() == b"vary"]
    vary_value = b", ".join(vary + [b"Accept-Encoding"]) if vary else b"Accept-Encoding"
    return kept + [(b"content-encoding", b"gzip"), (b"content-length", str(length).encode()),
                   (b"vary", vary_value)]
