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


def test_a_vaults_used_bytes_is_the_newest_reading_when_backups_publish_out_of_order(ctx, tenant, tmp_path,
                                                                                       monkeypatch):
    """Two backups of one vault: the first reads the usage after its own commit, the second commits and
    publishes before the first writes its (older) reading. The vault shows what the repository holds,
    not the older figure (tests/api/test_backup_accounting.py saw it once with two disks at once)."""
    from opencbr.catalog.models import Vault
    from opencbr.services.repositories import repository
    from opencbr.worker.runner import Worker

    ids = [disk(ctx, tenant, tmp_path, f"d{i}", size=1 << 20).id for i in range(2)]
    v = vault(ctx, tenant, "v", ids)
    with ctx.tx() as s:
        backups.create_checkpoint(s, ctx, tenant, v.id)
    real_publish, overtaken = backups._publish, []

    def publish_after_the_other_backup(*args, **kwargs):
        if not overtaken:  # the first backup: the second one runs to its end before this one publishes
            overtaken.append(True)
            assert Worker(ctx, "w-second").run_once()
        return real_publish(*args, **kwargs)

    monkeypatch.setattr(backups, "_publish", publish_after_the_other_backup)
    assert Worker(ctx, "w-first").run_once()
    monkeypatch.undo()
    with ctx.tx() as s:
        shown = s.get(Vault, v.id)
        states = [b.status for b in s.scalars(select(Backup).where(Backup.vault_id == v.id))]
        s.expunge(shown)
    assert overtaken and states == ["available", "available"]
    assert shown.used_bytes == repository(ctx, shown).usage() > 0
