#!/usr/bin/env python3
"""The agent link's TLS cost alone: 1 GiB in 4 MiB frames from an agent-side process to a service-side
one over loopback mutual TLS (``agentlink``'s contexts and ``Channel``, as a backup's records travel),
and the CPU seconds each end used.

    python bench/agent_tls.py [--gib 1]

Prints the negotiated suite and ``sender`` / ``receiver`` CPU (user + system). On the 2-core bench VM
(load 6-7): receiver 1.1-1.5 s, sender 0.7-1.0 s per GiB (docs/agents.md, *Throughput*).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT / "src"), str(REPO_ROOT)]

from opencbr.agentlink import tls  # noqa: E402
from opencbr.agentlink.certs import issue  # noqa: E402
from opencbr.agentlink.channel import Channel  # noqa: E402
from tests.providers.agent.agents import Authority  # noqa: E402

FRAME = 4 << 20


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _sender(listener: socket.socket, auth: Authority, cert: str, key: str, total: int) -> None:
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ctx = tls.agent_server_context(cert, key, auth.ca)
    ch = Channel(ctx.wrap_socket(conn, server_side=True), timeout=120)
    payload = bytearray(os.urandom(FRAME))
    c = _cpu()
    for _ in range(total // FRAME):
        ch.send({"op": "records", "sizes": [len(payload) - 32]}, [payload])
    ch.send({"op": "end"})
    ch.recv()
    print(f"sender   CPU {_cpu() - c:.2f} s", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0)
    a = ap.parse_args()
    total = int(a.gib * (1 << 30))
    auth = Authority.new()
    cert, key = issue(auth.ca, auth.ca_key, "agent-1", server=True, client=False)
    listener = socket.create_server(("127.0.0.1", 0))
    p = mp.get_context("fork").Process(target=_sender, args=(listener, auth, cert, key, total))
    p.start()
    raw = socket.create_connection(listener.getsockname())
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ctx = tls.service_client_context(auth.service_cert, auth.service_key, auth.ca)
    sock = ctx.wrap_socket(raw)
    ch = Channel(sock, timeout=120)
    print(f"suite    {sock.cipher()[0]}")
    c, t = _cpu(), time.monotonic()
    held: list = []  # a few payloads alive at once, as the worker's checks hold them
    while True:
        header, payload = ch.recv()
        if header.get("op") == "end":
            break
        held = [*held[-2:], payload]
    print(f"receiver CPU {_cpu() - c:.2f} s (wall {time.monotonic() - t:.2f} s, load {os.getloadavg()[0]:.1f})",
          flush=True)
    ch.send({"ok": True})
    p.join()


if __name__ == "__main__":
    main()
