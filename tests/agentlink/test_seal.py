"""agentlink/seal.py: a data connection carried on in AES-GCM frames keyed inside its TLS."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from opencbr.agentlink import certs, seal, tls
from opencbr.agentlink.channel import Channel, LinkError, RemoteError, error_answer
from opencbr.agentlink.client import connect
from opencbr.agentlink.server import Server

MARKER = b"plaintext that must never cross the wire "


@pytest.fixture(scope="module")
def pki():
    ca, ca_key = certs.new_authority()
    agent = certs.issue(ca, ca_key, "agent-1", server=True, client=False)
    service = certs.issue(ca, ca_key, tls.SERVICE_CN, server=False, client=True)
    return {"ca": ca, "agent": agent, "service": service,
            "client_ctx": tls.service_client_context(*service, ca)}


class Relay:
    """A TCP relay between the client and the server that keeps what the server sent and received, and
    can alter the client's bytes on their way (``alter(data, offset) -> data``: ``offset`` counts the
    bytes the client sent before ``data``)."""

    def __init__(self, target: tuple[str, int], alter=None):
        self.target, self.alter = target, alter
        self.upstream = bytearray()  # client -> server, as the client sent it
        self.downstream = bytearray()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self._listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pump, args=(client, server, self.upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, self.downstream, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, log: bytearray, altered: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                offset = len(log)
                log += data
                alter = self.alter if altered else None
                dst.sendall(alter(data, offset) if alter else data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()


def _connect_once_free(endpoint: str, client_ctx, timeout: float = 10.0) -> Channel:
    """A sealed connection, asked again while the server is busy (it lets a slot go once the connection
    that held it has ended, in its own time)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return connect(endpoint, client_ctx, expect_common_name="agent-1", expect_fingerprint=None,
                           seal={"project_id": "p1"})
        except RemoteError as e:
            if e.code != "busy" or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _echo_until_closed(ch, req, payload) -> None:
    while True:
        ch.send({"ok": True, "echo": req}, payload)
        try:
            req, payload = ch.recv()
        except LinkError:
            return


def _server(pki, *, sealing: bool = True, handle=None):
    """An agent-like server: echoes each request's header and payload until the client closes; records
    the stream each connection's channel ended on."""
    streams: list = []
    requests: list = []

    def echo(ch, req, payload, peer):
        streams.append(type(ch.sock).__name__)
        requests.append(req.get("op"))
        if req.get("op") == seal.OP:  # as an older agent answers an operation it does not know
            ch.send(error_answer("unknown_op", "no operation 'seal'"))
            return
        _echo_until_closed(ch, req, payload)

    ctx = tls.agent_server_context(*pki["agent"], pki["ca"])
    return Server(("127.0.0.1", 0), ctx, handle or echo, sealing=sealing).start(), streams, requests


def _exchange(ch: Channel, payload: bytes, op: str = "x") -> bytes:
    answer, data = ch.request({"op": op, "project_id": "p1"}, payload)
    assert answer["echo"]["op"] == op
    return bytes(data)


def test_a_sealed_channel_carries_messages_both_ways_and_no_plaintext_crosses(pki):
    srv, streams, _ = _server(pki)
    relay = Relay(("127.0.0.1", srv.address[1]))
    try:
        fp = certs.fingerprint(pki["agent"][0])
        with connect(relay.endpoint, pki["client_ctx"], expect_common_name="agent-1", expect_fingerprint=fp,
                     seal={"project_id": "p1"}) as ch:
            assert isinstance(ch.sock, seal.SealedStream)
            assert certs.fingerprint(tls_der_to_pem(ch.sock.getpeercert(binary_form=True))) == fp
            big = MARKER * ((5 << 20) // len(MARKER))  # 5 MiB: six frames each way
            for payload in (b"", b"small", big, os.urandom(3 << 20)):
                assert _exchange(ch, payload) == payload
        assert streams == ["SealedStream"]
        # the relay saw both directions: neither the marker nor the answers' echo travelled in clear
        assert MARKER[:24] not in relay.upstream and MARKER[:24] not in relay.downstream
        assert b'"echo"' not in relay.downstream
    finally:
        relay.close()
        srv.stop()


def tls_der_to_pem(der: bytes) -> str:
    import ssl

    return ssl.DER_cert_to_PEM_cert(der)


class _After:
    """Flips one bit of the client's bytes once it has sent ``start`` bytes (past the handshake, the
    exchange and its first request): inside the next frame."""

    def __init__(self, start: int):
        self.start, self.done = start, False

    def __call__(self, data: bytes, offset: int) -> bytes:
        if self.done or offset + len(data) <= self.start:
            return data
        self.done = True
        data = bytearray(data)
        data[min(len(data) - 1, self.start - offset + 100)] ^= 0x01
        return bytes(data)


def test_a_frame_altered_on_the_wire_ends_the_connection_and_is_never_delivered(pki):
    delivered: list = []

    def handle(ch, req, payload, peer):
        while True:
            try:
                req, payload = ch.recv()
            except LinkError as e:
                delivered.append(e)
                return
            delivered.append(bytes(payload))

    srv = Server(("127.0.0.1", 0), tls.agent_server_context(*pki["agent"], pki["ca"]), handle).start()
    relay = Relay(("127.0.0.1", srv.address[1]))
    try:
        with connect(relay.endpoint, pki["client_ctx"], expect_common_name="agent-1", expect_fingerprint=None,
                     seal={"project_id": "p1"}, io_timeout=10) as ch:
            ch.send({"op": "first", "project_id": "p1"})
            relay.alter = _After(_settled_length(relay))
            ch.send({"op": "second"}, MARKER * 1000)
            _wait(lambda: delivered)
        assert len(delivered) == 1 and isinstance(delivered[0], LinkError)  # nothing of it was handed on
        assert "failed its check" in str(delivered[0])
    finally:
        relay.close()
        srv.stop()


def _settled_length(relay: Relay) -> int:
    n = -1
    while n != len(relay.upstream):
        n = len(relay.upstream)
        time.sleep(0.1)
    return n


def _wait(cond, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


class Recording(socket.socket):
    """A socket that keeps what was sent on it."""

    def sendall(self, data, *flags):
        self.log = getattr(self, "log", b"") + bytes(data)
        return super().sendall(data, *flags)


def _stream_pair(rekey_a: int = seal.REKEY_BYTES, rekey_b: int = seal.REKEY_BYTES):
    a, b = socket.socketpair()
    a = Recording(fileno=a.detach())
    a.settimeout(10)
    b.settimeout(10)
    c2s, s2c = seal.session_keys(os.urandom(32), os.urandom(32))
    return (Channel(seal.SealedStream(a, c2s, s2c, rekey_bytes=rekey_a), timeout=10),
            Channel(seal.SealedStream(b, s2c, c2s, rekey_bytes=rekey_b), timeout=10), a)


def _send_in_thread(ch: Channel, *messages) -> threading.Thread:
    t = threading.Thread(target=lambda: [ch.send(*m) for m in messages])
    t.start()
    return t


def test_a_replayed_frame_fails_its_check():
    a, b, raw_a = _stream_pair()
    with a, b:
        a.send({"op": "one"}, b"payload")
        assert bytes(b.recv()[1]) == b"payload"
        socket.socket.sendall(raw_a, raw_a.log)  # the same frame again: its nonce is not the next one
        with pytest.raises(LinkError, match="failed its check"):
            b.recv()


def test_a_frame_whose_length_was_altered_fails_its_check():
    a, b, raw_a = _stream_pair()
    with a, b:
        a.send({"op": "one"}, b"payload")
        assert bytes(b.recv()[1]) == b"payload"
        sealed = raw_a.log  # that frame as it crossed; now as if it were the next one, its length altered
        b.sock._rx.counter = 0
        n = int.from_bytes(sealed[:4], "big")
        socket.socket.sendall(raw_a, (n - 1).to_bytes(4, "big") + bytes(sealed[4:]))  # one byte less, same bytes
        with pytest.raises(LinkError, match="failed its check"):
            b.recv()


def test_keys_are_renewed_as_the_bytes_add_up():
    """Both ends renew each direction's key every ``rekey_bytes``: a receiver that did not renew (here:
    one set to renew later) fails on the first frame under the new key."""
    a, b, _ = _stream_pair(rekey_a=64 << 10, rekey_b=64 << 10)
    with a, b:
        first = a.sock._tx.key
        t = _send_in_thread(a, *[({"op": "m"}, bytes([i]) * (40 << 10)) for i in range(8)])
        for i in range(8):  # 320 KiB: five keys
            assert bytes(b.recv()[1]) == bytes([i]) * (40 << 10)
        t.join()
        assert a.sock._tx.key != first and a.sock._tx.key == b.sock._rx.key
    a, b, _ = _stream_pair(rekey_a=64 << 10, rekey_b=1 << 30)
    with a, b:
        t = _send_in_thread(a, *[({"op": "m"}, bytes(40 << 10)) for _ in range(3)])
        assert b.recv() and b.recv()[0] == {"op": "m"}  # the second message ends past 64 KiB
        with pytest.raises(LinkError, match="failed its check"):
            b.recv()
        t.join()


def test_a_frame_too_large_or_cut_short_is_a_link_error_not_an_allocation():
    a, b, raw_a = _stream_pair()
    with a, b:
        raw_a.sendall((seal.FRAME_BYTES + 1).to_bytes(4, "big") + b"x" * 64)
        with pytest.raises(LinkError, match="not a sealed frame"):
            b.recv()
    a, b, raw_a = _stream_pair()
    with a, b:
        raw_a.sendall((1000).to_bytes(4, "big") + b"x" * 64)
        raw_a.shutdown(socket.SHUT_WR)
        with pytest.raises(LinkError, match="inside a frame"):
            b.recv()


def test_a_limited_channel_reads_frames_in_slices():
    a, b, _ = _stream_pair()
    with a, b:
        b.limit_bytes_per_second = 4 << 20  # slices of 1 MiB: a frame is read in parts
        payload = os.urandom((3 << 20) + 5)
        t = _send_in_thread(a, ({"op": "big"}, payload))
        header, data = b.recv()
        t.join()
        assert header == {"op": "big"} and bytes(data) == payload
        assert a.sent_bytes == b.received_bytes


def test_an_older_peer_that_does_not_seal_gets_a_second_connection_over_tls(pki, caplog):
    srv, streams, requests = _server(pki, sealing=False)
    try:
        with connect(f"127.0.0.1:{srv.address[1]}", pki["client_ctx"], expect_common_name="agent-1",
                     expect_fingerprint=None, seal={"project_id": "p1"}) as ch:
            assert isinstance(ch.sock, tls.TLSStream)
            assert _exchange(ch, MARKER) == MARKER
        assert requests == [seal.OP, "x"] and streams == ["TLSStream", "TLSStream"]
        assert "does not seal data connections" in caplog.text  # (the operator learns to upgrade it)
    finally:
        srv.stop()


def test_a_busy_peer_is_said_busy_not_taken_for_one_that_does_not_seal(pki, caplog):
    """A peer at its connection limit answers ``busy`` before it reads the offer: that is for the caller to
    retry later (RemoteError ``busy``), not a reason to connect again without sealing."""
    srv = Server(("127.0.0.1", 0), tls.agent_server_context(*pki["agent"], pki["ca"]),
                 lambda ch, req, payload, peer: _echo_until_closed(ch, req, payload), max_connections=1).start()
    endpoint = f"127.0.0.1:{srv.address[1]}"
    try:
        with connect(endpoint, pki["client_ctx"], expect_common_name="agent-1", expect_fingerprint=None,
                     seal={"project_id": "p1"}) as first:
            assert _exchange(first, b"one") == b"one"  # (it holds the only slot)
            with pytest.raises(RemoteError) as busy:
                connect(endpoint, pki["client_ctx"], expect_common_name="agent-1", expect_fingerprint=None,
                        seal={"project_id": "p1"})
            assert busy.value.code == "busy"
        assert "does not seal" not in caplog.text
        with _connect_once_free(endpoint, pki["client_ctx"]) as again:
            assert isinstance(again.sock, seal.SealedStream) and _exchange(again, b"two") == b"two"
    finally:
        srv.stop()


def test_without_seal_a_connection_stays_tls(pki):
    srv, streams, requests = _server(pki)
    try:
        with connect(f"127.0.0.1:{srv.address[1]}", pki["client_ctx"], expect_common_name="agent-1",
                     expect_fingerprint=None) as ch:
            assert _exchange(ch, b"ping") == b"ping"
        assert streams == ["TLSStream"] and requests == ["x"]
    finally:
        srv.stop()


def test_tls_data_left_unread_is_not_dropped_by_the_switch(pki):
    """The switch refuses to drop what TLS decrypted and nobody read (the peer broke the exchange)."""
    server_ctx = tls.agent_server_context(*pki["agent"], pki["ca"])
    a, b = socket.socketpair()
    a.settimeout(10)
    b.settimeout(10)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("s", tls.wrap(a, server_ctx, server_side=True)))
    t.start()
    client = tls.wrap(b, pki["client_ctx"], server_side=False)
    t.join()
    out["s"].sendall(b"x" * 100)
    got = bytearray(10)
    assert client.recv_into(got, 10) == 10
    with pytest.raises(OSError, match="pending"):
        client.detach()


def test_a_sealed_channel_outlives_the_bound_on_its_opening(pki, monkeypatch):
    """A data connection's opening is bounded as a whole (client.OPENING_WITHIN); once open, only the
    per-read timeout holds: a channel used past that bound is not cut."""
    import time

    from opencbr.agentlink import client

    monkeypatch.setattr(client, "OPENING_WITHIN", 0.5)
    srv, streams, _ = _server(pki)
    try:
        with connect(f"127.0.0.1:{srv.address[1]}", pki["client_ctx"], expect_common_name="agent-1",
                     expect_fingerprint=None, seal={"project_id": "p1"}) as ch:
            assert ch.cutoff is None
            time.sleep(1.0)
            assert _exchange(ch, b"after the bound") == b"after the bound"
        assert streams == ["SealedStream"]
    finally:
        srv.stop()
