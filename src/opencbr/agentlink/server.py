"""A threaded TLS server for the agent: one thread per connection, a bounded number of connections.

``handle(channel, request, payload, peer)`` gets the first message of a connection (the request) and
answers on the channel (a client's offer to seal the connection comes before it, and is answered here:
``seal.py``); whatever it raises is logged and answered as an error (never a traceback on the
wire). Connections beyond ``max_connections`` are answered ``busy`` and closed.

Only an authenticated connection counts towards ``max_connections``: a slot is taken once the TLS
handshake has checked the client's certificate. Before that, a connection is one of at most
``max_handshakes`` handshakes in flight (``max_handshakes_per_address`` from one address), each of which
must end within ``handshake_timeout`` seconds in all. One more makes room by closing the oldest handshake
in flight (from its own address when that address is at its share): a real client's handshake takes
milliseconds, so idle connections cannot keep it out, even from the client's own address (a service
behind the same NAT, a user of the service's machine), unless they arrive faster than it completes.
(Slots used to be taken before the handshake, whose timeout applied to each read: anyone who could
reach the port held every slot with a few idle connections, sending a byte now and then, and the agent
answered the service ``busy`` for as long as they liked.)"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from . import seal
from .certs import common_name, fingerprint
from .channel import Channel, LinkError, error_answer
from .tls import TLSStream, wrap

log = logging.getLogger("opencbr.agentlink")


@dataclass(frozen=True)
class Peer:
    address: str
    common_name: str  # "" without TLS
    fingerprint: str  # "" without TLS


Handler = Callable[[Channel, dict, memoryview, Peer], None]


class Server:
    def __init__(self, address: tuple[str, int], context: ssl.SSLContext | None, handle: Handler, *,
                 max_connections: int = 16, timeout: float = 120.0, handshake_timeout: float = 15.0,
                 sealing: bool = True, max_handshakes: int = 64, max_handshakes_per_address: int = 8):
        self.context = context
        self.sealing = sealing  # False: an offer to seal reaches ``handle`` (as it reaches an older peer's)
        self.handle = handle
        self.timeout = timeout
        self.handshake_timeout = handshake_timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self.max_handshakes = max_handshakes
        self.max_handshakes_per_address = max_handshakes_per_address
        # the handshakes in flight, oldest first: id(connection) -> (address, connection)
        self._handshakes: OrderedDict[int, tuple[str, socket.socket]] = OrderedDict()
        self._handshakes_lock = threading.Lock()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(address)
        self._sock.listen(64)
        self.address = self._sock.getsockname()[:2]
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "Server":
        self._thread = threading.Thread(target=self._accept_loop, name="agentlink-accept", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._accept_loop()

    def stop(self) -> None:
        self._stopping.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, addr = self._sock.accept()
            except OSError:
                if self._stopping.is_set():
                    return
                continue
            self._begin_handshake(addr[0], conn)
            try:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                threading.Thread(target=self._serve, args=(conn, addr), name="agentlink-conn", daemon=True).start()
            except BaseException:
                self._end_handshake(conn)
                conn.close()
                if self._stopping.is_set():
                    return
                log.exception("connection from %s:%s dropped", addr[0], addr[1])

    def _begin_handshake(self, host: str, conn: socket.socket) -> None:
        """Count ``conn`` in; when that makes one too many, close the oldest handshake in flight (from
        ``host`` if it is at its share, else from anywhere): its thread's read fails and it ends."""
        with self._handshakes_lock:
            mine = [k for k, (h, _) in self._handshakes.items() if h == host]
            if len(mine) >= self.max_handshakes_per_address:
                oldest = mine[0]
            elif len(self._handshakes) >= self.max_handshakes:
                oldest = next(iter(self._handshakes))
            else:
                oldest = None
            evicted = self._handshakes.pop(oldest) if oldest is not None else None
            self._handshakes[id(conn)] = (host, conn)
        if evicted is not None:
            log.warning("TLS handshake from %s closed unfinished: too many in flight (%s from that address)",
                        evicted[0], self.max_handshakes_per_address if oldest in mine else "all")
            try:
                evicted[1].shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _end_handshake(self, conn: socket.socket) -> None:
        with self._handshakes_lock:
            self._handshakes.pop(id(conn), None)

    def _serve(self, conn: socket.socket, addr) -> None:
        peer_addr = f"{addr[0]}:{addr[1]}"
        try:
            sock = self._wrap(conn, peer_addr)
        finally:
            self._end_handshake(conn)
        if sock is None:
            return
        got_slot = self._slots.acquire(blocking=False)  # (authenticated now: only the service's take slots)
        try:
            ch = Channel(sock, timeout=self.timeout)
            try:
                peer = self._peer(sock, peer_addr)
                if not got_slot:
                    ch.send(error_answer("busy", "the agent is serving as many connections as it may; retry"))
                    return
                request, payload = ch.recv()
                if self.sealing and request.get("op") == seal.OP:
                    if seal.accept(ch, request, payload):
                        log.info("connection from %s: sealed (%s)", peer_addr, seal.SUITE)
                    request, payload = ch.recv()
                try:
                    self.handle(ch, request, payload, peer)
                except LinkError as e:
                    log.warning("connection from %s (%s) broke: %s", peer_addr, request.get("op"), e)
                except Exception as e:  # noqa: BLE001 - answered, logged; never a traceback on the wire
                    log.exception("request %s from %s failed", request.get("op"), peer_addr)
                    try:
                        ch.send(error_answer("internal", f"{type(e).__name__}: {e}"))
                    except LinkError:
                        pass
            except LinkError as e:
                log.info("connection from %s: %s", peer_addr, e)
            finally:
                ch.close()
        finally:
            if got_slot:
                self._slots.release()

    def _wrap(self, conn: socket.socket, peer_addr: str):
        if self.context is None:
            return conn
        conn.settimeout(self.handshake_timeout)
        try:
            return wrap(conn, self.context, server_side=True, deadline=time.monotonic() + self.handshake_timeout)
        except (ssl.SSLError, OSError) as e:
            log.warning("TLS handshake with %s refused: %s", peer_addr, e)
            conn.close()
            return None

    @staticmethod
    def _peer(sock, peer_addr: str) -> Peer:
        if not isinstance(sock, TLSStream):
            return Peer(peer_addr, "", "")
        der = sock.getpeercert(binary_form=True)
        return Peer(peer_addr, common_name(der) if der else "", fingerprint(der) if der else "")
