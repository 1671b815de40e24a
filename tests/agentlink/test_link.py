"""agentlink: frames, mutual TLS with pinning, refusals."""

from __future__ import annotations

import socket
import threading

import pytest

from opencbr.agentlink import certs, tls
from opencbr.agentlink.channel import LinkError, RemoteError, channel_pair, error_answer
from opencbr.agentlink.client import connect
from opencbr.agentlink.server import Server


def test_frames_carry_headers_and_payloads_both_ways():
    a, b = channel_pair(timeout=5)
    with a, b:
        a.send({"op": "x", "n": 1}, [b"ab", memoryview(b"cd")])
        h, p = b.recv()
        assert h == {"op": "x", "n": 1} and bytes(p) == b"abcd"
        big = bytes(range(256)) * 4096  # 1 MiB: the large-payload path
        t = threading.Thread(target=b.send, args=({"ok": True}, big))  # a socketpair holds less: read meanwhile
        t.start()
        h, p = a.recv()
        t.join()
        assert bytes(p) == big
        assert a.sent_bytes == b.received_bytes and b.sent_bytes == a.received_bytes


def test_error_answer_raises_remote_error_and_eof_raises_link_error():
    a, b = channel_pair(timeout=5)
    t = threading.Thread(target=lambda: (b.recv(), b.send(error_answer("busy", "later")), b.close()))
    t.start()
    with pytest.raises(RemoteError) as e:
        a.request({"op": "x"})
    assert e.value.code == "busy"
    t.join()
    with pytest.raises(LinkError):
        a.recv()


def test_garbage_is_a_link_error_not_a_crash():
    s1, s2 = socket.socketpair()
    from opencbr.agentlink.channel import Channel
    ch = Channel(s2, timeout=5)
    s1.sendall(b"\xff\xff\xff\xff" + b"x" * 10)
    with pytest.raises(LinkError):
        ch.recv()
    s1, s2 = socket.socketpair()  # a header nested 100,000 deep: RecursionError, which ended the task unanswered
    ch = Channel(s2, timeout=5)
    deep = b"[" * 100_000 + b"]" * 100_000
    s1.sendall(len(deep).to_bytes(4, "big") + deep + bytes(8))
    with pytest.raises(LinkError, match="not JSON"):
        ch.recv()


@pytest.fixture(scope="module")
def pki():
    ca, ca_key = certs.new_authority()
    agent_key, csr = certs.new_key_and_csr("agent-1")
    agent_cert = certs.sign_csr(ca, ca_key, csr, common_name="agent-1", server=True, client=False)
    svc_cert, svc_key = certs.issue(ca, ca_key, tls.SERVICE_CN, server=False, client=True)
    return {"ca": ca, "ca_key": ca_key, "agent": (agent_cert, agent_key), "service": (svc_cert, svc_key)}


def _echo_server(pki):
    seen = []

    def handle(ch, req, payload, peer):
        seen.append(peer)
        ch.send({"ok": True, "echo": req, "peer": peer.common_name}, payload)

    ctx = tls.agent_server_context(*pki["agent"], pki["ca"])
    return Server(("127.0.0.1", 0), ctx, handle).start(), seen


def test_mutual_tls_with_pinned_fingerprint(pki):
    srv, seen = _echo_server(pki)
    try:
        ctx = tls.service_client_context(*pki["service"], pki["ca"])
        ep = f"127.0.0.1:{srv.address[1]}"
        with connect(ep, ctx, expect_common_name="agent-1", expect_fingerprint=certs.fingerprint(pki["agent"][0])) as ch:
            h, p = ch.request({"op": "ping"}, b"hi")
            assert h["peer"] == tls.SERVICE_CN and bytes(p) == b"hi"
        assert seen[0].fingerprint == certs.fingerprint(pki["service"][0])
        with pytest.raises(LinkError, match="another certificate"):
            connect(ep, ctx, expect_common_name="agent-1", expect_fingerprint="sha256:" + "0" * 64)
        with pytest.raises(LinkError, match="not the agent") as refused:
            connect(ep, ctx, expect_common_name="agent-2", expect_fingerprint=None)
        # the message becomes the enrolled agent's last_error, which its project reads: the agent found
        # at that address may be another project's, whose id and certificate are none of its business
        assert "agent-1" not in str(refused.value) and "sha256" not in str(refused.value)
        with pytest.raises(LinkError, match="another certificate") as refused:
            connect(ep, ctx, expect_common_name="agent-1", expect_fingerprint="sha256:" + "1" * 64)
        assert certs.fingerprint(pki["agent"][0]) not in str(refused.value)
    finally:
        srv.stop()


def test_a_client_of_another_authority_is_refused(pki):
    srv, seen = _echo_server(pki)
    try:
        other_ca, other_key = certs.new_authority()
        cert, key = certs.issue(other_ca, other_key, tls.SERVICE_CN, server=False, client=True)
        ctx = tls.service_client_context(cert, key, pki["ca"])  # trusts the agent, but is not trusted
        with pytest.raises(LinkError):
            ch = connect(f"127.0.0.1:{srv.address[1]}", ctx, expect_common_name="agent-1", expect_fingerprint=None)
            ch.request({"op": "ping"})  # TLS 1.3: the refusal may arrive with the first read
        assert not seen
    finally:
        srv.stop()


def test_a_csr_subject_is_overridden_and_a_forged_csr_refused(pki):
    key, csr = certs.new_key_and_csr("opencbr-service")  # asks to be the service
    cert = certs.sign_csr(pki["ca"], pki["ca_key"], csr, common_name="agent-9", server=True, client=False)
    assert certs.common_name(cert) == "agent-9"
    with pytest.raises(ValueError):
        certs.sign_csr(pki["ca"], pki["ca_key"], "not a csr", common_name="x", server=True, client=False)


def test_bandwidth_limit_paces_sends():
    import time
    a, b = channel_pair(timeout=5)
    with a, b:
        a.limit_bytes_per_second = 1 << 20
        t = threading.Thread(target=lambda: [b.recv() for _ in range(3)])
        t.start()
        t0 = time.monotonic()
        for _ in range(3):
            a.send({}, bytes(1 << 20))  # 3 MiB at 1 MiB/s with a 1 MiB burst: >= ~2 s
        t.join()
        assert time.monotonic() - t0 >= 1.8


def test_closing_a_limited_channel_ends_its_send_and_receive_at_once():
    """A cancelled task closes its channel: a send or a receive paced by a low limit stops within a
    fraction of a second, not after the frame's bytes have trickled through (4 MiB at 64 KiB/s: a minute)."""
    import time
    a, b = channel_pair(timeout=30)
    a.limit_bytes_per_second = 64 << 10
    b.limit_bytes_per_second = 64 << 10
    errors: dict = {}

    def run(name, fn):
        try:
            fn()
        except LinkError as e:
            errors[name] = (e, time.monotonic())

    sender = threading.Thread(target=run, args=("send", lambda: a.send({}, bytes(4 << 20))))
    receiver = threading.Thread(target=run, args=("recv", b.recv))
    sender.start()
    receiver.start()
    threading.Event().wait(1.5)  # both are pacing by now (the one-second burst is spent)
    assert sender.is_alive() and receiver.is_alive()
    closed = time.monotonic()
    a.close()
    b.close()
    sender.join(5)
    receiver.join(5)
    assert set(errors) == {"send", "recv"}
    assert max(t for _e, t in errors.values()) - closed < 0.5, errors


def _dripping_peer():
    """A listener whose first connection gets a TLS handshake record's header, then a byte every 0.3 s
    (12 s): never late by a per-read timeout. Returns (the listening socket, its endpoint)."""
    import socket
    import threading
    import time

    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)

    def drip():
        conn, _ = lst.accept()
        try:
            conn.sendall(b"\x16\x03\x03\x10\x00")  # a handshake record of 4 KiB: the client waits for it
            for _ in range(40):
                conn.sendall(b"\x00")
                time.sleep(0.3)
        except OSError:
            pass
        finally:
            conn.close()

    threading.Thread(target=drip, daemon=True).start()
    return lst, f"127.0.0.1:{lst.getsockname()[1]}"


def test_a_peer_that_drips_its_tls_handshake_is_cut_within_the_time_given(pki):
    """A socket's timeout is per read: a peer sending its handshake a byte at a time was never late.
    ``connect(within=...)`` cuts the connection that long after it was opened, handshake included."""
    import time

    lst, endpoint = _dripping_peer()
    ctx = tls.service_client_context(*pki["service"], pki["ca"])
    t0 = time.monotonic()
    with pytest.raises(LinkError, match="within 1 s"):
        connect(endpoint, ctx, expect_common_name="agent-1", expect_fingerprint=None, timeout=5, within=1)
    assert time.monotonic() - t0 < 3
    lst.close()


def test_a_data_connection_whose_peer_drips_its_handshake_is_cut_at_the_opening_bound(pki, monkeypatch):
    """A data task's connection (sealed, no ``within``) had only the per-read timeout while it opened: an
    agent dripping its TLS handshake a byte every few seconds held a worker's thread for hours before the
    task began. Its opening is bounded as a whole now (``OPENING_WITHIN``), and only its opening: a channel
    once open is not cut (the task's own watch bounds it; test_seal)."""
    import time

    from opencbr.agentlink import client

    monkeypatch.setattr(client, "OPENING_WITHIN", 1.0)
    lst, endpoint = _dripping_peer()
    ctx = tls.service_client_context(*pki["service"], pki["ca"])
    t0 = time.monotonic()
    with pytest.raises(LinkError, match="within 1 s"):
        connect(endpoint, ctx, expect_common_name="agent-1", expect_fingerprint=None, timeout=5,
                seal={"project_id": "p1"})
    assert time.monotonic() - t0 < 3
    lst.close()
