"""SDK-HMAC-SHA256 request signing, as the official ``huaweicloudsdkcore`` signer does it.

Both sides use this module: the API verifies signatures with it and the ``cbr`` CLI signs with it, so
they cannot drift apart. The algorithm is specified in the CBR v3 API reference (docs/api.md), section 2.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote, unquote, unquote_plus

ALGORITHM = "SDK-HMAC-SHA256"
DATE_FORMAT = "%Y%m%dT%H%M%SZ"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def _encode(s: str) -> str:
    # Only A-Za-z0-9 and -_.~ stay unescaped (CBR v3 API 2, step 3.2).
    return quote(s, safe="~")


def canonical_uri(path: str) -> str:
    """Decode the path, percent-encode each segment, and end it with ``/``."""
    segments = [_encode(unquote(seg)) for seg in path.split("/")]
    uri = "/".join(segments)
    return uri if uri.endswith("/") else uri + "/"


def query_pairs(raw_query: str) -> list[tuple[str, str]]:
    """The decoded ``(key, value)`` pairs of a raw query, in order, exactly as the web framework decodes
    them: split on ``&`` and the first ``=``, with ``+`` meaning a space (form encoding). The canonical
    form is built from these same pairs, so a signature covers the values the service acts on: ``a+b``
    signs as ``a%20b`` and ``a%2Bb`` as ``a%2Bb``. (The official SDK never sends a bare ``+``: its
    signer percent-encodes every value with ``quote(v, safe="~")`` and sends that very string.)"""
    pairs = []
    for part in raw_query.split("&") if raw_query else ():
        if not part:
            continue
        k, _, v = part.partition("=")
        pairs.append((unquote_plus(k), unquote_plus(v)))
    return pairs


def canonical_query(raw_query: str) -> str:
    """``key=value`` pairs with both sides encoded, sorted by (key, value), joined by ``&``."""
    return query_string(query_pairs(raw_query))


def query_string(params: Iterable[tuple[str, str]]) -> str:
    """The query string the SDK puts on the wire: the canonical form of the given pairs."""
    pairs = sorted((_encode(k), _encode(v)) for k, v in params)
    return "&".join(f"{k}={v}" for k, v in pairs)


def canonical_request(method: str, path: str, raw_query: str, headers: Mapping[str, str],
                      signed_headers: list[str], body_sha256: str) -> str:
    lower = {k.lower(): v for k, v in headers.items()}
    header_block = "".join(f"{h}:{lower.get(h, '').strip()}\n" for h in signed_headers)
    return "\n".join([
        method.upper(),
        canonical_uri(path),
        canonical_query(raw_query),
        header_block,
        ";".join(signed_headers),
        body_sha256,
    ])


def string_to_sign(sdk_date: str, canonical: str) -> str:
    return f"{ALGORITHM}\n{sdk_date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def signature(secret_key: str, to_sign: str) -> str:
    return hmac.new(secret_key.encode(), to_sign.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Authorization:
    access_key: str
    signed_headers: list[str]
    signature: str


def parse_authorization(value: str) -> Authorization | None:
    """Parse ``SDK-HMAC-SHA256 Access=AK, SignedHeaders=a;b, Signature=hex``; None if malformed."""
    if not value or not value.startswith(ALGORITHM + " "):
        return None
    fields: dict[str, str] = {}
    for part in value[len(ALGORITHM) + 1:].split(","):
        k, sep, v = part.strip().partition("=")
        if not sep:
            return None
        fields[k] = v
    try:
        signed = [h for h in fields["SignedHeaders"].split(";") if h]
        return Authorization(fields["Access"], signed, fields["Signature"])
    except KeyError:
        return None


def parse_sdk_date(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, DATE_FORMAT).replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return None


def body_hash(headers: Mapping[str, str], body: bytes) -> str:
    """SHA-256 of the body, or the ``X-Sdk-Content-Sha256`` value (``UNSIGNED-PAYLOAD``) when sent."""
    lower = {k.lower(): v for k, v in headers.items()}
    declared = lower.get("x-sdk-content-sha256")
    if declared == "UNSIGNED-PAYLOAD":
        return declared
    return hashlib.sha256(body).hexdigest()


def sign_headers(method: str, path: str, raw_query: str, headers: dict[str, str], body: bytes,
                 access_key: str, secret_key: str, now: datetime | None = None) -> dict[str, str]:
    """Add ``X-Sdk-Date`` and ``Authorization`` to ``headers`` the way the official SDK does."""
    headers = dict(headers)
    headers["X-Sdk-Date"] = (now or datetime.now(UTC)).strftime(DATE_FORMAT)
    signed = sorted(k.lower() for k in headers if "_" not in k)
    canonical = canonical_request(method, path, raw_query, headers, signed, body_hash(headers, body))
    sig = signature(secret_key, string_to_sign(headers["X-Sdk-Date"], canonical))
    headers["Authorization"] = f"{ALGORITHM} Access={access_key}, SignedHeaders={';'.join(signed)}, Signature={sig}"
    return headers
