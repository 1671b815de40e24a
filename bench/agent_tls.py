#!/usr/bin/env python3
"""The agent link's TLS cost alone: 1 GiB in 4 MiB frames from an agent-side process to a service-side
one over loopback mutual TLS (``agentlink``'s contexts and ``Channel``, as a backup's records travel),
and the CPU seconds each end used.

    python bench/agent_tls.py [--gib 1] [--rounds 5]

Each round moves the data three times, in turn: in ``sealed`` frames (``agentlink/seal.py``: what a
data connection moves on to after the TLS handshake, since 2026-12-07), over the link's ``TLSStream``
(records encrypted into memory, 256 KiB per system call: control calls, and data connections to older
agents) and over ``ssl.SSLSocket`` (a system call per 16 KiB record, the link until 2026-12-05). Prints
the negotiated suite, each transfer's ``sender`` / ``receiver`` CPU (user + system) and wall time, and
the medians per variant.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT / "src"), str(REPO_ROOT)]

from opencbr.agentlink import seal, tls  # noqa: E402
from opencbr.agentlink.certs import issue  # noqa: E402
from opencbr.agentlink.channel import Channel  # noqa: E402
from tests.providers.agent.agents import Authority  # noqa: E402

FRAME = 4 << 20


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _wrap(sock: socket.socket, ctx, *, server_side: bool, variant: str):
    if variant == "sslsocket":
        return ctx.wrap_socket(sock, server_side=server_side)
    return tls.wrap(sock, ctx, server_side=server_side)


def _channel(sock: socket.socket, ctx, *, server_side: bool, variant: str) -> Channel:
    """The variant's channel; ``sealed``: the exchange inside TLS, as ``Server`` and ``client.connect`` do."""
    ch = Channel(_wrap(sock, ctx, server_side=server_side, variant=variant), timeout=120)
    if variant == "sealed":
        if server_side:
            offer, secret = ch.recv()
            assert seal.accept(ch, offer, secret)
        else:
            assert seal.offer(ch)
    return ch


def _sender(listener: socket.socket, auth: Authority, cert: str, key: str, total: int, variant: str, out) -> None:
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ctx = tls.agent_server_context(cert, key, auth.ca)
    ch = _channel(conn, ctx, server_side=True, variant=variant)
    payload = bytearray(os.urandom(FRAME))
    c = _cpu()
    for _ in range(total // FRAME):
        ch.send({"op": "records", "sizes": [len(payload) - 32]}, [payload])
    ch.send({"op": "end"})
    ch.recv()
    out.put(_cpu() - c)


def transfer(auth: Authority, cert: str, key: str, total: int, variant: str) -> dict:
    """One transfer of ``total`` bytes; the CPU seconds of both ends and the wall time."""
    listener = socket.create_server(("127.0.0.1", 0))
    out = mp.get_context("fork").Queue()
    p = mp.get_context("fork").Process(target=_sender, args=(listener, auth, cert, key, total, variant, out))
    p.start()
    raw = socket.create_connection(listener.getsockname())
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ctx = tls.service_client_context(auth.service_cert, auth.service_key, auth.ca)
    ch = _channel(raw, ctx, server_side=False, variant=variant)
    suite = ch.sock.cipher()[0]
    c, t = _cpu(), time.monotonic()
    held: list = []  # a few payloads alive at once, as the worker's checks hold them
    while True:
        header, payload = ch.recv()
        if header.get("op") == "end":
            break
        held = [*held[-2:], payload]
    receiver, wall = _cpu() - c, time.monotonic() - t
    ch.send({"ok": True})
    sender = out.get()
    p.join()
    ch.close()
    listener.close()
    return {"suite": suite, "sender": sender, "receiver": receiver, "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    total = int(a.gib * (1 << 30))
    auth = Authority.new()
    cert, key = issue(auth.ca, auth.ca_key, "agent-1", server=True, client=False)
    runs: dict[str, list[dict]] = {"sealed": [], "tlsstream": [], "sslsocket": []}
    for i in range(a.rounds):
        for variant, got in runs.items():
            r = transfer(auth, cert, key, total, variant)
            got.append(r)
            print(f"round {i + 1} {variant:9s} {r['suite']}: sender CPU {r['sender']:.2f} s, receiver CPU "
                  f"{r['receiver']:.2f} s, wall {r['wall']:.2f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    print(f"\nmedians of {a.rounds}, {a.gib:g} GiB each:")
    print("| variant | sender CPU s | receiver CPU s | wall s |\n|---|--:|--:|--:|")
    for variant, got in runs.items():
        print(f"| {variant} | " + " | ".join(f"{statistics.median(r[k] for r in got):.2f}"
                                            for k in ("sender", "receiver", "wall")) + " |")


if __name__ == "__main__":
    main()
