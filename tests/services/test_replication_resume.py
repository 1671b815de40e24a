"""A replication whose link is cut mid-transfer, tried again, sends only what the destination lacks:
the chunks that arrived before the cut stay in the destination vault (indexed, in no backup yet) and the
next attempt's "which do you lack" answer excludes them. A real TCP relay cuts the link; the replica is
then restored bit-exact from the destination vault."""

from __future__ import annotations

import hashlib
import time

from sqlalchemy import select

from opencbr.catalog.models import Backup, ReplicationRecord, Task, Vault
from opencbr.engine.disk.restore import restore_disk
from opencbr.services import replication, resources
from opencbr.services.repositories import repository
from tests.support.scheduler import Driver, backup_now, vault

MiB = 1 << 20
SIZE = 24 * MiB


def _sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _receiver_done(dest, n: int) -> None:
    """Wait until the destination's receiver finished ``n`` tasks (it keeps what arrived, then fails)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with dest.ctx.read() as s:
            ended = s.scalars(select(Task.status).where(Task.operation_type == "replication",
                                                        Task.status.in_(("failed", "success")))).all()
        if len(ended) >= n:
            return
        time.sleep(0.05)
    raise AssertionError("the receiver did not end its task")


def test_a_cut_replication_resumes_without_resending(ctx, tenant, clock, tmp_path, linked):
    dest, proxy = linked
    img = tmp_path / "data.img"
    with open(img, "wb") as f:  # incompressible: bytes on the wire ~ data
        f.write(__import__("os").urandom(SIZE))
    with ctx.tx() as s:
        d = resources.register_disk(s, ctx, tenant, name="data", path=str(img))
    v = vault(ctx, tenant, "src", [d.id])
    dv = vault(dest.ctx, dest.principal(), "dr", protect_type="replication")
    backup_now(ctx, tenant, v.id)
    worker = Driver(ctx, clock)
    worker.drain()
    with ctx.read() as s:
        bid = s.scalar(select(Backup.id).where(Backup.vault_id == v.id))
    target = {"destination_project_id": dest.info.project_id, "destination_region": "region-b",
              "destination_vault_id": dv.id}

    proxy.reset(cut_after=SIZE // 2)  # the link breaks halfway
    with ctx.tx() as s:
        first = replication.copy_backup(s, ctx, tenant, bid, target)["replication_record_id"]
    worker.drain()
    _receiver_done(dest, 1)
    with ctx.read() as s:
        rec = s.get(ReplicationRecord, first)
        assert rec.status == "failed" and "region-b" in rec.fail_reason, rec.fail_reason
    assert proxy.cuts == 1 and dest.replicas() == []  # no partial replica
    with dest.ctx.read() as s:
        dvault = s.get(Vault, dv.id)
        s.expunge(dvault)
    # what the destination kept of the first attempt (stored, so about its data: it is incompressible).
    # Not what the relay forwarded: a receiver behind on a loaded machine never reads the last
    # megabytes in its socket before it sees the cut
    kept = repository(dest.ctx, dvault).stored_bytes()
    assert 0 < kept <= proxy.up + MiB, (kept, proxy.up)

    proxy.reset()
    with ctx.tx() as s:
        second = replication.copy_backup(s, ctx, tenant, bid, target)["replication_record_id"]
    worker.drain()
    with ctx.read() as s:
        rec = s.get(ReplicationRecord, second)
        assert rec.status == "available", rec.fail_reason
    missing = SIZE - kept
    # what the destination kept is not sent again (but for the message the cut broke, <= 4 MiB)
    assert proxy.up <= missing + 5 * MiB, (proxy.up, missing)
    assert proxy.up >= missing - 2 * MiB, (proxy.up, missing)  # (and what was missing was sent)
    out = tmp_path / "restored.img"
    restore_disk(repository(dest.ctx, dvault).chunks, rec.destination_backup_id, str(out))
    assert _sha(out) == _sha(img)
