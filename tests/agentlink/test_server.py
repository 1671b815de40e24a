"""agentlink/server.py: who holds the server's connection slots, and for how long before the TLS handshake."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from opencbr.agentlink import certs, tls
from opencbr.agentlink.client import connect
from opencbr.agentlink.server import Server


@pytest.fixture(scope="module")
def pki():
    ca, ca_key = certs.new_authority()
    agent = certs.issue(ca, ca_key, "agent-1", server=True, client=False)
    service = certs.issue(ca, ca_key, tls.SERVICE_CN, server=False, client=True)
    return {"ca": ca, "agent": agent, "client_ctx": tls.service_client_context(*service, ca)}


def _pong(ch, request, _payload, _peer):
    ch.send({"ok": True, "pong": request.get("n")})


def _ping(endpoint: str, ctx, n: int) -> dict:
    with connect(endpoint, ctx, expect_common_name="agent-1", expect_fingerprint=None, timeout=5) as ch:
        return ch.request({"op": "ping", "n": n})[0]


def _closed(s: socket.socket, wait: float) -> bool:
    """Whether the server closed ``s`` (within ``wait`` seconds)."""
    s.settimeout(wait)
    try:
        return s.recv(1 << 16) == b""
    except socket.timeout:
        return False
    except OSError:
        return True


def test_idle_unauthenticated_connections_take_no_slot_and_cannot_stretch_the_handshake(pki):
    """Anyone who could reach the port held every slot with idle TCP connections (slots were taken before
    the handshake), and kept them by sending a byte now and then (its timeout applied to each read): the
    agent then answered the service ``busy`` for good."""
    srv = Server(("127.0.0.1", 0), tls.agent_server_context(*pki["agent"], pki["ca"]), _pong,
                 max_connections=2, handshake_timeout=2.0).start()
    endpoint = f"127.0.0.1:{srv.address[1]}"
    idle = []
    try:
        for _ in range(4):  # twice the slots, each one byte into a TLS record
            s = socket.create_connection(("127.0.0.1", srv.address[1]))
            s.sendall(b"\x16")
            idle.append(s)
        time.sleep(0.3)
        assert _ping(endpoint, pki["client_ctx"], 1) == {"ok": True, "pong": 1}  # not busy
        started = time.monotonic()
        while time.monotonic() - started < 3.5:  # a byte every half second, past the handshake's 2 s
            for s in idle:
                try:
                    s.sendall(b"\x03")
                except OSError:
                    pass
            time.sleep(0.5)
        assert all(_closed(s, 1.0) for s in idle)
        assert _ping(endpoint, pki["client_ctx"], 2) == {"ok": True, "pong": 2}
    finally:
        for s in idle:
            s.close()
        srv.stop()


def test_handshakes_in_flight_are_bounded_and_the_oldest_make_room(pki):
    """One address holds at most ``max_handshakes_per_address`` handshakes open (each a thread): one more
    closes the oldest. So a client's handshake (milliseconds) gets through even while idle connections
    keep coming from its own address (a user of the service's machine, a shared NAT)."""
    srv = Server(("127.0.0.1", 0), tls.agent_server_context(*pki["agent"], pki["ca"]), _pong,
                 max_connections=2, handshake_timeout=30.0, max_handshakes_per_address=3).start()
    endpoint = f"127.0.0.1:{srv.address[1]}"
    port = srv.address[1]
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
    stop = threading.Event()

    def flood():
        while not stop.is_set():
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"\x16")
            idle.append(s)
            time.sleep(0.05)

    try:
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", port))
        idle.append(extra)
        assert _closed(idle[0], 2.0) and not _closed(extra, 0.3)  # the oldest went, not the newest
        flooding = threading.Thread(target=flood, daemon=True)
        flooding.start()
        for n in range(5):
            assert _ping(endpoint, pki["client_ctx"], n) == {"ok": True, "pong": n}
        stop.set()
        flooding.join(5)
        with srv._handshakes_lock:
            assert len(srv._handshakes) <= 3
    finally:
        stop.set()
        for s in idle:
            s.close()
        srv.stop()
