"""agentlink/tls.py: the buffered TLS stream under a channel (TLSStream)."""

from __future__ import annotations

import socket
import threading

import pytest

from opencbr.agentlink import certs, tls
from opencbr.agentlink.channel import Channel, LinkError


@pytest.fixture(scope="module")
def contexts():
    ca, ca_key = certs.new_authority()
    agent = certs.issue(ca, ca_key, "agent-1", server=True, client=False)
    service = certs.issue(ca, ca_key, tls.SERVICE_CN, server=False, client=True)
    return tls.agent_server_context(*agent, ca), tls.service_client_context(*service, ca)


class CountingSocket(socket.socket):
    """A socket that counts the system calls a stream makes on it."""

    sends = 0
    receives = 0

    def sendall(self, data, *flags):
        self.sends += 1
        return super().sendall(data, *flags)

    def recv_into(self, buffer, *args):
        self.receives += 1
        return super().recv_into(buffer, *args)


def _pair(contexts, timeout: float = 10) -> tuple[Channel, Channel, CountingSocket, CountingSocket]:
    """A TLS channel pair over a socketpair of counting sockets (both handshakes run at once)."""
    server_ctx, client_ctx = contexts
    a, b = socket.socketpair()
    a, b = CountingSocket(fileno=a.detach()), CountingSocket(fileno=b.detach())
    a.settimeout(timeout)
    b.settimeout(timeout)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("server", tls.wrap(a, server_ctx, server_side=True)))
    t.start()
    client = tls.wrap(b, client_ctx, server_side=False)
    t.join()
    assert client.getpeercert(binary_form=True) and out["server"].getpeercert(binary_form=True)
    return Channel(out["server"], timeout=timeout), Channel(client, timeout=timeout), a, b


def test_a_large_message_crosses_intact_in_few_system_calls(contexts):
    server, client, server_sock, client_sock = _pair(contexts)
    with server, client:
        payload = bytes(range(256)) * (16 << 10)  # 4 MiB: 256 TLS records
        sends, receives = server_sock.sends, client_sock.receives
        t = threading.Thread(target=server.send, args=({"op": "records"}, [payload[:1000], memoryview(payload)[1000:]]))
        t.start()
        header, data = client.recv()
        t.join()
        assert header == {"op": "records"} and bytes(data) == payload
        # ssl.SSLSocket made a send per record (256) and two receives per record (512)
        assert server_sock.sends - sends <= 24
        assert client_sock.receives - receives <= 128


def test_messages_read_ahead_of_the_caller_count_as_readable(contexts):
    """Two messages arrive in one read: the second waits in the stream's buffer, where a poll of the
    socket does not see it. A pump that polled the socket alone would wait for it forever."""
    server, client, _s, _c = _pair(contexts)
    with server, client:
        server.send({"op": "first"})
        server.send({"op": "second"})
        assert client.recv()[0] == {"op": "first"}
        wake_r, wake_w = socket.socketpair()
        with wake_r, wake_w:
            assert client.readable()
            assert client.wait_readable(wake_r, timeout=1) is True
        assert client.recv()[0] == {"op": "second"}


def test_the_peer_closing_mid_message_or_going_silent_is_a_link_error(contexts):
    server, client, server_sock, _c = _pair(contexts, timeout=0.5)
    with client:
        with pytest.raises(LinkError, match="did not answer in time"):
            client.recv()
        server_sock.sendall(b"\x17\x03\x03\x00\x20")  # the start of a TLS record, and then nothing more
        server.close()
        with pytest.raises(LinkError):
            client.recv()
