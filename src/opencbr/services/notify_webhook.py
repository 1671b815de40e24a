"""Delivering an alarm to a webhook: a JSON body POSTed with an HMAC-SHA256 signature over it.

The header ``X-OpenCBR-Signature: t=<unix seconds>,v1=<hex>`` carries the time of sending and
``HMAC-SHA256(secret, "<t>." + body)``; the receiver recomputes it over the raw body with the secret it
was given when the target was created, compares in constant time, and refuses old ``t`` (replays).
docs/monitoring.md shows a receiver.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

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


class ForbiddenAddress(ValueError):
    """A webhook URL whose host is, or resolves to, an address a tenant may not make the service call."""


class Unresolved(ForbiddenAddress):
    """The host does not resolve (now): nothing can be sent to it, nor judged."""


@dataclass(frozen=True)
class Reach:
    """Where a tenant's webhook may point: public addresses, plus ``allowed`` networks (the operator's
    ``alarm_webhook_allowed_networks``); never ``own_ports`` (the service's listeners) on this machine."""

    allowed: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    own_ports: frozenset[int] = frozenset()

    @classmethod
    def of(cls, settings) -> "Reach":
        ports = set()
        for listen in (settings.listen, settings.metrics_listen, settings.replication_listen):
            port = listen.rsplit(":", 1)[-1] if listen else ""
            if port.isdigit():
                ports.add(int(port))
        return cls(tuple(ipaddress.ip_network(n, strict=False) for n in settings.alarm_webhook_allowed_networks),
                   frozenset(ports))


def _is_local(ip) -> bool:
    """An address of this machine (binding to it works; nothing is sent)."""
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((str(ip), 0))
            return True
        except OSError:
            return False


def _refusal(ip, port: int, reach: Reach) -> str:
    """Why ``ip`` may not be called (empty: it may)."""
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    local = ip.is_loopback or ip.is_unspecified or _is_local(ip)
    if local and port in reach.own_ports:
        return "is one of this service's own ports"
    if any(ip in net for net in reach.allowed):
        return ""
    if local:
        return "is this machine"
    if ip.is_link_local:
        return "is link-local (metadata services live there)"
    if ip.is_private or ip.is_reserved or ip.is_multicast or not ip.is_global:
        return "is not a public address"
    return ""


def checked_addresses(url: str, reach: Reach) -> list[str]:
    """Resolve the URL's host; every address must be one a tenant may call (a name resolving to one
    bad address among good ones is refused: the resolver may pick any). The addresses, to connect to."""
    parts = urlsplit(url)
    host, port = parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise Unresolved(f"the webhook's host {host!r} does not resolve: {e}") from None
    addresses = list(dict.fromkeys(info[4][0].split("%")[0] for info in found))
    for text in addresses:
        why = _refusal(ipaddress.ip_address(text), port, reach)
        if why:
            shown = host if host == text else f"{host} ({text})"
            raise ForbiddenAddress(f"the webhook's address {shown} {why}; the operator may allow its network "
                                   "(alarm_webhook_allowed_networks)")
    return addresses


def send(url: str, secret: str, body: bytes, reach: Reach | None = None) -> None:
    """POST ``body``; any answer but 2xx, or no answer, raises (the delivery is retried). With ``reach``
    (a tenant's target) the host is resolved and checked now, and the address checked is the one
    connected to (a name that changed to a forbidden address since creation is refused)."""
    headers = {"Content-Type": "application/json", HEADER: signature(secret, body, int(time.time())),
               "User-Agent": "OpenCBR-alarms"}
    with httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False, trust_env=False) as client:
        if reach is None:
            answer = client.post(url, content=body, headers=headers)
        else:
            answer = _post_pinned(client, url, body, headers, checked_addresses(url, reach))
    if not 200 <= answer.status_code < 300:
        raise OSError(f"the webhook answered HTTP {answer.status_code}")


def _post_pinned(client: httpx.Client, url: str, body: bytes, headers: dict, addresses: list[str]) -> httpx.Response:
    """POST to the checked addresses in turn (the next one only when one cannot be connected to), the URL's
    own name in ``Host`` and, for https, in the TLS handshake (the certificate is checked for the name)."""
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    for i, ip in enumerate(addresses):
        pinned = f"[{ip}]" if ":" in ip else ip
        netloc = (f"{userinfo}@" if userinfo else "") + (f"{pinned}:{parts.port}" if parts.port else pinned)
        try:
            return client.post(parts._replace(netloc=netloc).geturl(), content=body,
                               headers={**headers, "Host": hostport}, extensions=extensions)
        except httpx.ConnectError:
            if i == len(addresses) - 1:
                raise
    raise AssertionError("checked_addresses returns at least one address")
