"""The service's side of a connection to an agent: connect, complete the mutual TLS handshake and check
the agent is the one enrolled (its certificate's common name and pinned fingerprint)."""

from __future__ import annotations

import logging
import socket
import ssl
import threading

from . import seal as sealing
from .certs import common_name, fingerprint
from .channel import Channel, LinkError, RemoteError
from .tls import wrap

log = logging.getLogger("opencbr.agentlink")


def split_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise LinkError(f"not an agent endpoint (host:port): {endpoint!r}")
    return host.strip("[]"), int(port)


class Cutoff:
    """Shuts a connection down ``seconds`` after it was opened, whatever it is doing then. A socket's
    timeout is per read: a peer that answers a byte at a time (its TLS handshake, or its answer) is never
    late by it, and held the caller without end. ``fired`` says the connection was cut."""

    def __init__(self, sock: socket.socket, seconds: float):
        self.seconds = seconds
        self.fired = False
        self._sock = sock
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True
        self._timer.start()

    def _cut(self) -> None:
        self.fired = True
        try:  # (a closed socket's fd is -1: this never reaches a descriptor reused since)
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def cancel(self) -> None:
        self._timer.cancel()


#: A connection's opening, whole (TCP, TLS handshake, the seal's exchange), when the caller gives no
#: ``within`` of its own: a data task's connection is bounded so until it is open, then only per read.
OPENING_WITHIN = 30.0


def connect(endpoint: str, context: ssl.SSLContext | None, *, expect_common_name: str | None,
            expect_fingerprint: str | None, timeout: float = 10.0, io_timeout: float | None = 120.0,
            seal: dict | None = None, within: float | None = None) -> Channel:
    """A channel to the agent at ``endpoint`` ("host:port"). Without ``context`` (tests only) the
    connection is plain TCP and nothing is checked. ``seal`` (the fields the peer's request checks want,
    as ``{"project_id": ...}``): once the peer is authenticated, offer to carry the connection in sealed
    frames (``seal.py``: a data connection's bulk costs less than half the CPU); a peer that declines (an
    older agent) is connected to again, over TLS alone; one that answers ``busy`` raises
    :class:`RemoteError` (code ``busy``). ``within`` (seconds): the connection is cut that long after it
    was opened, handshake included (:class:`Cutoff`, the channel's ``cutoff``: cancel it when done); for
    a short exchange, not with ``seal``. Without it the opening alone is bounded (``OPENING_WITHIN``): a
    socket's timeout is per read, and an agent dripping its handshake a byte at a time held a worker's
    thread for hours before a data task began."""
    if within is not None:
        return _opened(endpoint, context, expect_common_name, expect_fingerprint, timeout, io_timeout, seal, within)
    channel = _opened(endpoint, context, expect_common_name, expect_fingerprint, timeout, io_timeout, seal,
                      OPENING_WITHIN)
    channel.cutoff.cancel()  # open: from now on the channel's own timeouts, per read (a task's watch: per task)
    if channel.cutoff.fired:
        channel.close()
        raise LinkError(f"the agent at {endpoint} did not open the connection within {OPENING_WITHIN:g} s")
    channel.cutoff = None
    return channel


def _opened(endpoint: str, context: ssl.SSLContext | None, expect_common_name: str | None,
            expect_fingerprint: str | None, timeout: float, io_timeout: float | None, seal: dict | None,
            within: float) -> Channel:
    channel = _connect(endpoint, context, expect_common_name, expect_fingerprint, timeout, io_timeout, within)
    if seal is None or context is None:
        return channel
    try:
        if sealing.offer(channel, seal):
            return channel
    except RemoteError:  # busy: for the caller to retry later, not a reason to connect without sealing
        channel.close()
        channel.cutoff.cancel()
        raise
    except LinkError:
        if channel.cutoff.fired:
            channel.close()
            raise LinkError(f"the agent at {endpoint} did not open the connection within {within:g} s") from None
        # (an older peer may close the connection without answering: connect again)
    channel.close()
    channel.cutoff.cancel()
    log.warning("the peer at %s does not seal data connections (an older version: upgrade it); "
                "going on over TLS alone", endpoint)
    return _connect(endpoint, context, expect_common_name, expect_fingerprint, timeout, io_timeout, within)


def _connect(endpoint: str, context: ssl.SSLContext | None, expect_common_name: str | None,
             expect_fingerprint: str | None, timeout: float, io_timeout: float | None,
             within: float | None = None) -> Channel:
    host, port = split_endpoint(endpoint)
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        raise LinkError(f"cannot reach the agent at {endpoint}: {e.strerror or e}") from None
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    cutoff = Cutoff(raw, within) if within is not None else None
    if context is None:
        return _with_cutoff(Channel(raw, timeout=io_timeout), cutoff)
    try:
        sock = wrap(raw, context, server_side=False)
    except (ssl.SSLError, OSError) as e:
        raw.close()
        if cutoff is not None:
            cutoff.cancel()
            if cutoff.fired:
                raise LinkError(f"the agent at {endpoint} did not complete its TLS handshake within "
                                f"{within:g} s") from None
        raise LinkError(f"TLS handshake with the agent at {endpoint} failed: {e}") from None
    der = sock.getpeercert(binary_form=True) or b""
    cn, fp = (common_name(der), fingerprint(der)) if der else ("", "")
    if expect_common_name is not None and cn != expect_common_name:
        sock.close()
        # (which agent answers instead is not said: the message reaches the enrolled agent's project as
        # its last_error, and the one at that address may be another project's)
        raise LinkError(f"the agent at {endpoint} is not the agent {expect_common_name!r} enrolled there "
                        "(its certificate names another agent)")
    if expect_fingerprint is not None and fp != expect_fingerprint:
        sock.close()
        raise LinkError(f"the agent at {endpoint} presents another certificate than the one enrolled "
                        f"({expect_fingerprint})")
    return _with_cutoff(Channel(sock, timeout=io_timeout), cutoff)


def _with_cutoff(channel: Channel, cutoff: Cutoff | None) -> Channel:
    channel.cutoff = cutoff
    return channel
