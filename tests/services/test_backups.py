"""A checkpoint of many resources (services.backups.create_checkpoint), as a fleet's policy execution makes
one per vault: its rows go to the catalog in batches, and each backup is incremental exactly when its
resource has an available backup in the vault."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select, update

from opencbr.catalog.models import Backup, Task
from opencbr.services import backups
from tests.support.scheduler import disk, vault
from tests.support.services import on_each_statement


def _statements(ctx, run) -> Counter:
    """The first two words of each statement ``run`` sends ("INSERT INTO", "SELECT tasks.id", "NOTIFY
    opencbr_tasks") with the table of an INSERT, counted."""
    seen: Counter = Counter()

    def note(_conn, _cursor, statement, *_args):
        words = statement.split()
        seen[" ".join(words[:3] if words[0] == "INSERT" else words[:2])] += 1

    on_each_statement(ctx, run, note)
    return seen


def test_a_checkpoint_of_many_resources_inserts_its_backups_and_tasks_in_batches(ctx, tenant, tmp_path):
    """A flush per row was most of the scheduler's time at a fleet's fire minute (bench/fleet.py)."""
    ids = [disk(ctx, tenant, tmp_path, f"d{i}", size=1 << 16).id for i in range(8)]
    v = vault(ctx, tenant, "v", ids)
    views = []

    def checkpoint():
        with ctx.tx() as s:
            views.append(backups.create_checkpoint(s, ctx, tenant, v.id))

    sent = _statements(ctx, checkpoint)
    assert sent["INSERT INTO backups"] == 1 and sent["INSERT INTO tasks"] == 1, sent
    assert sent["NOTIFY opencbr_tasks"] <= 1, sent  # PostgreSQL's doorbell, once per transaction
    with ctx.tx() as s:
        made = {b.resource_id: b for b in s.scalars(select(Backup).where(Backup.vault_id == v.id))}
        queued = {t.id: t for t in s.scalars(select(Task).where(Task.operation_type == "backup"))}
    assert set(made) == set(ids) and not any(b.incremental for b in made.values())
    assert {b.task_id for b in made.values()} == set(queued) == set(views[0].task_ids)
    assert all(queued[b.task_id].params == {"backup_id": b.id} for b in made.values())

    with ctx.tx() as s:  # three resources with an available backup, the others' in error
        for rid, b in made.items():
            s.execute(update(Backup).where(Backup.id == b.id).values(
                status="available" if rid in ids[:3] else "error"))
    checkpoint()
    assert {b.resource_id: b.incremental for b in views[1].backups} == {rid: rid in ids[:3] for rid in ids}
