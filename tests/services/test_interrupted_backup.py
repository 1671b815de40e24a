"""A backup whose worker dies after its manifest reached the store but before the catalog made it
Available, with no attempt left: the backup is ``error``, and the GC queued for it removes the manifest,
so its chunks and the vault's used capacity go with it (found by the crash campaign)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from opencbr.catalog.models import Backup, User, Vault
from opencbr.config import load_settings
from opencbr.services import backups, iam, resources, tasks, vaults
from opencbr.services.context import open_context
from opencbr.services.repositories import repository
from opencbr.worker.runner import Worker, task_handlers
from tests.support.disks import make_image


class WorkerDied(BaseException):
    """Stands for SIGKILL of the worker: nothing after it runs, nothing catches it."""


@pytest.fixture()
def one_attempt_ctx(catalog_url, tmp_path, clock):
    settings = load_settings(env={}, data_dir=str(tmp_path / "data"), catalog_url=catalog_url,
                             task_lease_seconds=30, task_max_attempts=1)
    c = open_context(settings, clock=clock)
    yield c
    c.close()


def test_manifest_of_a_backup_killed_before_its_commit_is_collected(one_attempt_ctx, clock, tmp_path,
                                                                    monkeypatch):
    ctx = one_attempt_ctx
    info = iam.bootstrap(ctx)
    with ctx.tx() as s:
        user = s.scalar(select(User).where(User.account_id == info.account_id))
    p = iam.principal_for_user(ctx, user.id, info.project_id)

    img = make_image(tmp_path / "d.img", 2 * 1024 * 1024, seed=5)
    with ctx.tx() as s:
        disk = resources.register_disk(s, ctx, p, name="d", path=img)
    with ctx.tx() as s:
        view = vaults.create_vault(s, ctx, p, {"name": "v", "billing": {
            "object_type": "disk", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"},
            "resources": [{"id": disk.id, "type": "OS::Cinder::Volume"}]})
    with ctx.tx() as s:
        cp = backups.create_checkpoint(s, ctx, p, view.vault.id)
    backup_id = cp.backups[0].id

    def die(*args, **kwargs):
        raise WorkerDied()

    monkeypatch.setattr(backups, "_publish", die)  # the manifest is stored; the commit never happens
    with pytest.raises(WorkerDied):
        Worker(ctx, "w-dies").run_once()
    monkeypatch.undo()
    with ctx.tx() as s:
        vault = s.get(Vault, view.vault.id)
        s.expunge(vault)
    repo = repository(ctx, vault)
    assert backup_id in list(repo.list_manifests()), "the kill must land after the manifest was stored"
    assert repo.usage() > 0

    clock.advance(seconds=120)
    assert tasks.expire_leases(ctx, task_handlers().abandoned) == 1
    with ctx.tx() as s:
        assert s.get(Backup, backup_id).status == "error"
    worker = Worker(ctx, "w-next")
    while worker.run_once():
        pass
    assert backup_id not in list(repo.list_manifests())
    assert repo.usage() == 0
    with ctx.tx() as s:
        assert s.get(Vault, view.vault.id).used_bytes == 0
        assert s.get(Backup, backup_id).status == "error"  # still shown, with its reason, until deleted
