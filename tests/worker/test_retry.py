"""A retried backup task never undoes a backup its lost attempt already published (issue 11, item 18:
"check the partial/uncommitted state is safe")."""

from __future__ import annotations

import os
from datetime import timedelta

from sqlalchemy import update

from opencbr.catalog.models import Task
from opencbr.services import backups, tasks
from opencbr.services.repositories import repository
from opencbr.worker.runner import Worker, task_handlers
from tests.support.disks import MiB
from tests.support.services import protected_disk


def test_retry_of_a_published_backup_keeps_it(ctx, tenant, clock, tmp_path):  # noqa: F811
    disk, v = protected_disk(ctx, tenant, tmp_path, seed=3)
    img = disk.path
    with ctx.tx() as s:
        view = backups.create_checkpoint(s, ctx, tenant, v.id)
    (task_id,) = view.task_ids
    b = view.backups[0]
    assert Worker(ctx, "w1").run_once()
    # as if w1 had been lost after it published the backup but before it finished the task
    with ctx.tx() as s:
        s.execute(update(Task).where(Task.id == task_id).values(
            status=tasks.RUNNING, lease_owner="w1", lease_expires_at=ctx.now() - timedelta(seconds=1)))
    assert tasks.expire_leases(ctx, task_handlers().abandoned) == 1
    os.unlink(img)  # a re-run could not even read the disk now
    assert Worker(ctx, "w2").run_once()
    with ctx.tx() as s:
        task = s.get(Task, task_id)
        assert (task.status, task.attempts) == ("success", 2), task.error_message
    with ctx.read() as s:
        assert backups.show_backup(s, tenant, b.id).backup.status == "available"
    repo = repository(ctx, v, create=False)
    assert b.id in repo.list_manifests()
    out = tmp_path / "restored.img"
    repo.restore_disk(b.id, str(out))
    assert out.stat().st_size == 2 * MiB
