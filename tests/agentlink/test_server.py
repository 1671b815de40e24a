"""agentlink/server.py: who holds the server's connection slots, and for how long before the TLS handshake."""

from __future__ import annotations

import socket
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


def test_handshakes_in_flight_are_bounded_per_address(pki):
    """One address cannot hold more than ``max_handshakes_per_address`` handshakes open (each a thread):
    the next connection is closed at once, and a handshake's end frees its place."""
    srv = Server(("127.0.0.1", 0), tls.agent_server_context(*pki["agent"], pki["ca"]), _pong,
                 max_connections=2, handshake_timeout=30.0, max_handshakes_per_address=3).start()
    endpoint = f"127.0.0.1:{srv.address[1]}"
    idle = [socket.create_connection(("127.0.0.1", srv.address[1])) for _ in range(3)]
    try:
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", srv.address[1]))
        try:
            assert _closed(extra, 2.0)
        finally:
            extra.close()
        idle.pop().close()  # one place free again: a client's handshake goes through
        time.sleep(0.3)
        assert _ping(endpoint, pki["client_ctx"], 3) == {"ok": True, "pong": 3}
    finally:
        for s in idle:
            s.close()
        srv.stop()
