"""A second installation in the test's process (its own catalog and object store, its replication
receiver on loopback), linked to the test's installation as region ``region-b``."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass

from sqlalchemy import select

from opencbr.catalog.models import Backup, User
from opencbr.config import load_settings
from opencbr.services import iam, regions, replication
from opencbr.services.context import open_context
from tests.support.databases import sqlite_url
from tests.support.server import free_port


@dataclass
class Destination:
    ctx: object
    info: object
    listen: str

    def principal(self):
        """The destination account's administrator (account "admin", as in the source: tenants map by
        account name)."""
        with self.ctx.read() as s:
            user = s.scalar(select(User.id).where(User.account_id == self.info.account_id))
        return iam.principal_for_user(self.ctx, user, self.info.project_id)

    def link_from(self, ctx, name: str = "region-b") -> None:
        with self.ctx.tx() as s:
            token = regions.issue_credential(s, self.ctx, "local-1").token
        with ctx.tx() as s:
            regions.add_region(s, ctx, name, self.listen, token)

    def replicas(self, statuses=("available", "protecting", "deleting")) -> list[Backup]:
        with self.ctx.read() as s:
            return list(s.scalars(select(Backup).where(
                Backup.image_type == "replication", Backup.parent_id.is_(None), Backup.status.in_(statuses))
                .order_by(Backup.created_at)))


def start_destination(tmp_path, clock):
    """(Destination, receiver server); stop the server and close the context after use."""
    d = tmp_path / "region-b"
    d.mkdir()
    listen = f"127.0.0.1:{free_port()}"
    settings = load_settings(env={}, data_dir=str(d), catalog_url=sqlite_url(str(d)), region="region-b",
                             replication_listen=listen)
    dctx = open_context(settings, clock=clock)
    info = iam.bootstrap(dctx)
    server = regions.receiver_server(dctx, replication.receive).start()
    return Destination(dctx, info, listen), server


class LinkProxy:
    """A TCP relay between a source and a destination's receiver that counts the bytes each way and
    cuts every connection once ``cut_after`` bytes went from the source to the destination: a link cut
    mid-transfer, as the network does it. ``hold_after``: once that many bytes went up, it forwards
    nothing more until :meth:`release` (a transfer paused at a known point; ``held`` is set then)."""

    def __init__(self, target: str):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"127.0.0.1:{self.server.getsockname()[1]}"
        self.cut_after: int | None = None
        self.hold_after: int | None = None
        self.held = threading.Event()
        self._released = threading.Event()
        self.up = self.down = 0  # bytes source -> destination, destination -> source
        self.cuts = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self, cut_after: int | None = None, hold_after: int | None = None) -> None:
        with self._lock:
            self.up = self.down = 0
            self.cut_after, self.hold_after = cut_after, hold_after
            self.held.clear()
            self._released.clear()

    def release(self) -> None:
        self._released.set()

    def close(self) -> None:
        self.server.close()

    def _accept(self) -> None:
        while True:
            try:
                src, _ = self.server.accept()
            except OSError:
                return
            dst = socket.create_connection(self.target)
            for a, b, up in ((src, dst, True), (dst, src, False)):
                threading.Thread(target=self._pipe, args=(a, b, up, (src, dst)), daemon=True).start()

    def _pipe(self, a, b, up: bool, both) -> None:
        try:
            while data := a.recv(1 << 16):
                if up and self.hold_after is not None and self.up + len(data) > self.hold_after:
                    self.held.set()
                    self._released.wait(30)
                with self._lock:
                    if up and self.cut_after is not None and self.up + len(data) > self.cut_after:
                        data = data[:max(0, self.cut_after - self.up)]
                        self.cuts += 1
                        cut = True
                    else:
                        cut = False
                    if up:
                        self.up += len(data)
                    else:
                        self.down += len(data)
                b.sendall(data)
                if cut:
                    break
        except OSError:
            pass
        for s in both:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass
