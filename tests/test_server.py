"""The API's listening socket: connections accepted from it answer without Nagle's delay."""

from __future__ import annotations

import asyncio
import socket

from opencbr.config import load_settings
from opencbr.server import listen_socket
from tests.support.server import free_port


def test_accepted_connections_have_nodelay(tmp_path):
    # asyncio sets TCP_NODELAY on an accepted connection only when the listening socket is IPPROTO_TCP.
    # Without it, each keep-alive answer (headers and body: two writes) waited for the client's delayed
    # ACK: ~40 ms per request for the SDK, whose connections are kept alive.
    settings = load_settings(env={"OPENCBR_DATA_DIR": str(tmp_path), "OPENCBR_LISTEN": f"127.0.0.1:{free_port()}"})
    sock = listen_socket(settings)

    async def accept_one() -> int:
        accepted: asyncio.Future = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport):
                accepted.set_result(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP,
                                                                                  socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        try:
            _, writer = await asyncio.open_connection(*sock.getsockname())
            nodelay = await asyncio.wait_for(accepted, 10)
            writer.close()
            return nodelay
        finally:
            server.close()

    assert asyncio.run(accept_one()) != 0
