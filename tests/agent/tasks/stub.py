"""A stand-in agent process for the data-path tests, until the agent program (``python -m opencbr.agent
run``) is on this branch: the real transport (mutual TLS server of :mod:`opencbr.agentlink`) and the real
data operations (:data:`opencbr.agent.tasks.OPERATIONS`), confined to ``--root`` directories.

``python -m tests.agent.tasks.stub --dir D --root R [--root R2] [--project P]``: D holds agent.pem,
agent.key and ca.pem; the bound port is written to D/port once listening.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
from dataclasses import dataclass, field

from opencbr.agent.tasks import OPERATIONS
from opencbr.agentlink.server import Server
from opencbr.agentlink.tls import agent_server_context
from opencbr.system.beneath import open_at, open_below


class RootsConfinement:
    """The agent program's Confinement, roots only (no devices)."""

    def __init__(self, roots: list[str]):
        self.roots = sorted({os.path.normpath(r) for r in roots}, key=len, reverse=True)

    def _where(self, path: str) -> tuple[str, str]:
        path = os.path.normpath(path)
        if ".." in path.split("/"):
            raise PermissionError(f"{path}: '..' refused")
        for root in self.roots:
            if path == root:
                return root, "."
            if path.startswith(root + "/"):
                return root, path[len(root) + 1:]
        raise PermissionError(f"{path} is outside this agent's roots")

    def open(self, path: str, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
        root, rel = self._where(path)
        return open_below(root, rel, flags, mode)

    def open_dir(self, path: str) -> int:
        root, rel = self._where(path)
        return open_below(root, rel, os.O_RDONLY | os.O_DIRECTORY)

    def makedirs(self, path: str, mode: int = 0o755) -> int:
        root, rel = self._where(path)
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        for name in [] if rel == "." else rel.split("/"):
            try:
                os.mkdir(name, mode, dir_fd=fd)
            except FileExistsError:
                pass
            nxt = open_at(fd, name, os.O_RDONLY | os.O_DIRECTORY, where=root)
            os.close(fd)
            fd = nxt
        return fd


@dataclass
class StubContext:
    confinement: RootsConfinement
    cancel: threading.Event = field(default_factory=threading.Event)


def handler(ctx_roots: list[str], project: str):
    def handle(channel, header: dict, payload: memoryview, peer) -> None:
        op = header.get("op")
        if header.get("project_id") != project:
            channel.send({"ok": False, "error": "wrong_project", "message": "this agent serves another project"})
            return
        fn = OPERATIONS.get(op)
        if fn is None:
            channel.send({"ok": False, "error": "unknown_op", "message": f"unknown operation {op!r}"})
            return
        if header.get("bandwidth_limit"):
            channel.limit_bytes_per_second = float(header["bandwidth_limit"])
        try:
            result = fn(StubContext(RootsConfinement(ctx_roots)), channel, header, payload)
        except Exception as e:  # noqa: BLE001
            try:
                channel.send({"ok": False, "error": type(e).__name__, "message": str(e)})
            except Exception:  # noqa: BLE001
                pass
            return
        channel.send({"ok": True, "result": result})

    return handle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True)
    ap.add_argument("--root", action="append", default=[])
    ap.add_argument("--project", default="p1")
    ap.add_argument("--listen", default="127.0.0.1:0")
    a = ap.parse_args()
    read = lambda n: open(os.path.join(a.dir, n)).read()  # noqa: E731
    ctx = agent_server_context(read("agent.pem"), read("agent.key"), read("ca.pem"))
    host, port = a.listen.rsplit(":", 1)
    srv = Server((host, int(port)), ctx, handler(a.root, a.project)).start()
    with open(os.path.join(a.dir, "port.tmp"), "w") as f:
        f.write(str(srv.address[1]))
    os.replace(os.path.join(a.dir, "port.tmp"), os.path.join(a.dir, "port"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    srv.stop()


if __name__ == "__main__":
    main()
