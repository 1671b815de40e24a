"""Delivering an alarm to a webhook: a JSON body POSTed with an HMAC-SHA256 signature over it.

The header ``X-OpenCBR-Signature: t=<unix seconds>,v1=<hex>`` carries the time of sending and
``HMAC-SHA256(secret, "<t>." + body)``; the receiver recomputes it over the raw body with the secret it
was given when the target was created, compares in constant time, and refuses old ``t`` (replays).
docs/monitoring.md shows a receiver.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import httpx

HEADER = "X-OpenCBR-Signature"
TIMEOUT_SECONDS = 10.0


def signature(secret: str, body: bytes, sent_at: int) -> str:
    mac = hmac.new(secret.encode(), f"{sent_at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={sent_at},v1={mac}"


def verify(secret: str, body: bytes, header: str, *, now: float | None = None, tolerance: int = 300) -> bool:
    """What a receiver does (used by the tests, and the reference for docs/monitoring.md)."""
    parts = dict(p.split("=", 1) for p in header.split(",") if "=" in p)
    try:
        sent_at = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - sent_at) > tolerance:
        return False
    return hmac.compare_digest(signature(secret, body, sent_at), header)


def send(url: str, secret: str, body: bytes) -> None:
    """POST ``body``; any answer but 2xx, or no answer, raises (the delivery is retried)."""
    headers = {"Content-Type": "application/json", HEADER: signature(secret, body, int(time.time())),
               "User-Agent": "OpenCBR-alarms"}
    with httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False, trust_env=False) as client:
        answer = client.post(url, content=body, headers=headers)
    if not 200 <= answer.status_code < 300:
        raise OSError(f"the webhook answered HTTP {answer.status_code}")
