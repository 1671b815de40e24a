"""A second installation in the test's process (its own catalog and object store, its replication
receiver on loopback), linked to the test's installation as region ``region-b``."""

from __future__ import annotations

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
