"""The API process and the workers beside it: connections accepted by the API answer without Nagle's
delay, and its worker processes yield the CPU to it."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time

import pytest

from opencbr.config import load_settings
from opencbr.server.serve import listen_socket
from opencbr.services.context import open_context
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


def _nice(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rpartition(")")[2].split()[16])


@pytest.mark.parametrize("how", ["supervised", "standalone"])
@pytest.mark.parametrize("setting, lowered_by", [(None, 10), ("3", 3)])
def test_worker_process_runs_at_a_lower_priority_than_the_api(tmp_path, setting, lowered_by, how):
    # standalone (`cbr worker`, e.g. beside an API on one machine) as much as under `cbr serve`
    if os.nice(0) + lowered_by > 19:
        pytest.skip(f"running at nice {os.nice(0)}: no room to lower the worker by {lowered_by}")
    env = {**os.environ, "OPENCBR_DATA_DIR": str(tmp_path)}
    env.pop("OPENCBR_WORKER_NICE", None)
    if setting is not None:
        env["OPENCBR_WORKER_NICE"] = setting  # worker_nice: a setting (default 10)
    open_context(load_settings(env=env)).close()  # the catalog a supervised worker expects (it does not migrate)
    flags = ["--supervised"] if how == "supervised" else []
    worker = subprocess.Popen([sys.executable, "-m", "opencbr.cli.main", "worker", "--count", "1", *flags],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while _nice(worker.pid) != os.nice(0) + lowered_by and time.time() < deadline:
            assert worker.poll() is None, "the worker exited"
            time.sleep(0.1)
        assert _nice(worker.pid) == os.nice(0) + lowered_by
    finally:
        worker.terminate()
        worker.wait(20)
