"""migrate_vault_resource at the service level: the data moves into the destination's repository under
its own keys, rows switch only after that, the source's copies go afterwards, capacity follows; a worker
killed at each step leaves every Available backup restorable, and what it left behind is cleaned up."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from opencbr.catalog.models import Backup, Checkpoint, Task, Vault, VaultResource
from opencbr.config import load_settings
from opencbr.domain.errors import CBRError, NotFound
from opencbr.engine import Repository
from opencbr.services import iam, migration, tasks
from opencbr.services.context import open_context
from opencbr.services.repositories import repository
from opencbr.worker.runner import Worker, task_handlers
from tests.support import scheduler as S
from tests.support.disks import MiB, make_image, mutate, sha256


class WorkerDied(BaseException):
    """Stands for SIGKILL of the worker: nothing after it runs, nothing catches it."""


def drain(ctx, name: str = "w") -> None:
    worker = Worker(ctx, name)
    while worker.run_once():
        pass


def vault_row(ctx, vault_id: str) -> Vault:
    with ctx.read() as s:
        v = s.get(Vault, vault_id)
        s.expunge(v)
        return v


def repo_of(ctx, vault_id: str) -> Repository:
    return repository(ctx, vault_row(ctx, vault_id))


@pytest.fixture()
def setup(ctx, tenant, tmp_path):
    return make_setup(ctx, tenant, tmp_path)


def make_setup(ctx, tenant, tmp_path):
    """Vault A holds disks d1 (two backups, the second after a change) and d2 (one); vault B is empty.
    Returns what the test needs, with each backup's expected image digest."""
    img1 = make_image(tmp_path / "d1.img", 3 * MiB, seed=11)
    img2 = make_image(tmp_path / "d2.img", 2 * MiB, seed=12)
    with ctx.tx() as s:
        from opencbr.services import resources
        d1 = resources.register_disk(s, ctx, tenant, name="d1", path=img1)
        d2 = resources.register_disk(s, ctx, tenant, name="d2", path=img2)
    a = S.vault(ctx, tenant, "A", [d1.id, d2.id])
    b = S.vault(ctx, tenant, "B")
    expected = {}
    for step in range(2):
        if step:
            mutate(img1, seed=3)
        view = S.backup_now(ctx, tenant, a.id, {"resources": [d1.id] if step else [d1.id, d2.id]})
        drain(ctx)
        for bk in view.backups:
            expected[bk.id] = sha256(img1 if bk.resource_id == d1.id else img2)
    return {"a": a.id, "b": b.id, "d1": d1.id, "d2": d2.id, "expected": expected, "tmp": tmp_path}


def check_all_restorable(ctx, setup) -> dict[str, str]:
    """Every Available backup exports bit-exact from the vault its row names; returns backup -> vault."""
    where = {}
    with ctx.read() as s:
        rows = list(s.scalars(select(Backup).where(Backup.id.in_(list(setup["expected"])))))
    for b in rows:
        assert b.status == "available", (b.name, b.status)
        out = setup["tmp"] / f"out-{b.id}.raw"
        repo_of(ctx, b.vault_id).export_disk(b.id, str(out))
        assert sha256(out) == setup["expected"][b.id], f"backup {b.name} differs in vault {b.vault_id}"
        out.unlink()
        where[b.id] = b.vault_id
    return where


def migrate(ctx, p, setup, resource_ids) -> list[str]:
    with ctx.tx() as s:
        return migration.migrate_resources(s, ctx, p, setup["a"], setup["b"], resource_ids)[0]


def test_resources_and_their_backups_move_with_the_data(ctx, tenant, setup):
    a_used_before = vault_row(ctx, setup["a"]).used_bytes
    assert migrate(ctx, tenant, setup, [setup["d1"]]) == [setup["d1"]]
    with ctx.read() as s:  # the association moves at once
        assert s.scalar(select(VaultResource.vault_id).where(VaultResource.resource_id == setup["d1"])) == setup["b"]
    drain(ctx)
    where = check_all_restorable(ctx, setup)
    d1_ids = [i for i in setup["expected"] if _resource(ctx, i) == setup["d1"]]
    assert {where[i] for i in d1_ids} == {setup["b"]} and len(d1_ids) == 2
    assert [where[i] for i in setup["expected"] if i not in d1_ids] == [setup["a"]]
    repo_a, repo_b = repo_of(ctx, setup["a"]), repo_of(ctx, setup["b"])
    assert set(repo_b.list_manifests()) == set(d1_ids)
    assert not set(repo_a.list_manifests()) & set(d1_ids)
    assert repo_a.config["keys"] != repo_b.config["keys"]  # re-encrypted: each vault has its own keys
    a, b = vault_row(ctx, setup["a"]), vault_row(ctx, setup["b"])
    assert b.used_bytes == repo_b.usage() > 0
    assert a.used_bytes == repo_a.usage() < a_used_before
    with ctx.read() as s:
        task = s.scalar(select(Task).where(Task.operation_type == "migrate"))
        assert task.status == "success", task.error_message
        assert sorted(task.extra_info["migrate"]["moved_backups"]) == sorted(d1_ids)
        for i in d1_ids:  # each moved backup's checkpoint is the destination's
            assert s.get(Checkpoint, s.get(Backup, i).checkpoint_id).vault_id == setup["b"]
        first_cp = s.get(Backup, d1_ids[0]).checkpoint_id
        d2_backup = next(i for i in setup["expected"] if i not in d1_ids)
        assert s.get(Checkpoint, s.get(Backup, d2_backup).checkpoint_id).vault_id == setup["a"]
        assert first_cp != s.get(Backup, d2_backup).checkpoint_id  # a checkpoint split between the vaults


def _resource(ctx, backup_id: str) -> str:
    with ctx.read() as s:
        return s.get(Backup, backup_id).resource_id


def test_what_the_request_refuses(ctx, tenant, setup):
    t = S.vault(ctx, tenant, "servers", object_type="server", rtype="OS::Nova::Server")
    with ctx.tx() as s, pytest.raises(CBRError, match="same type") as e:
        migration.migrate_resources(s, ctx, tenant, setup["a"], t.id, [setup["d1"]])
    assert e.value.code == "BackupService.6971"
    with ctx.tx() as s, pytest.raises(CBRError, match="is the source vault"):
        migration.migrate_resources(s, ctx, tenant, setup["a"], setup["a"], [setup["d1"]])
    with ctx.tx() as s, pytest.raises(NotFound):
        migration.migrate_resources(s, ctx, tenant, setup["b"], setup["a"], [setup["d1"]])  # not in B
    _account, project, user, _cred = iam.create_account(ctx, "other")
    other = iam.principal_for_user(ctx, user.id, project.id)
    with ctx.tx() as s, pytest.raises(NotFound):  # another project's vaults are unknown
        migration.migrate_resources(s, ctx, other, setup["a"], setup["b"], [setup["d1"]])
    with ctx.tx() as s:
        s.get(Vault, setup["b"]).used_bytes = 10 * 1024**3
    with ctx.tx() as s, pytest.raises(CBRError, match="has no room") as e:
        migration.migrate_resources(s, ctx, tenant, setup["a"], setup["b"], [setup["d1"]])
    assert e.value.code == "BackupService.6974"
    with ctx.tx() as s:
        s.get(Vault, setup["b"]).used_bytes = 0
    S.backup_now(ctx, tenant, setup["a"], {"resources": [setup["d2"]]})  # running (not drained)
    with ctx.tx() as s, pytest.raises(CBRError, match="is running"):
        migration.migrate_resources(s, ctx, tenant, setup["a"], setup["b"], [setup["d2"]])
    migrate(ctx, tenant, setup, [setup["d1"]])
    with ctx.tx() as s, pytest.raises(CBRError, match="being migrated already"):
        migration.migrate_resources(s, ctx, tenant, setup["a"], setup["b"], [setup["d1"]])


@pytest.mark.parametrize("kill_at", ["before_switch", "after_switch"])
def test_a_worker_killed_mid_way_loses_nothing(ctx, tenant, setup, clock, monkeypatch, kill_at):
    """Killed after the first backup's copy is committed in B but before its rows switch, or after they
    switch but before A's manifest is deleted: every backup stays restorable; the next attempt finishes,
    reusing the copy, and A keeps no manifest of a moved backup."""
    migrate(ctx, tenant, setup, [setup["d1"], setup["d2"]])
    if kill_at == "before_switch":
        def die(*args, **kwargs):
            raise WorkerDied()
        monkeypatch.setattr(migration, "_switch", die)
    else:
        real = Repository.delete_backup

        def die(self, backup_id):
            if self.prefix == f"vaults/{setup['a']}/":
                raise WorkerDied()
            return real(self, backup_id)
        monkeypatch.setattr(Repository, "delete_backup", die)
    with pytest.raises(WorkerDied):
        Worker(ctx, "w-dies").run_once()
    monkeypatch.undo()
    where = check_all_restorable(ctx, setup)
    moved = [i for i, v in where.items() if v == setup["b"]]
    assert len(moved) == (0 if kill_at == "before_switch" else 1)
    assert len(repo_of(ctx, setup["b"]).list_manifests()) == 1  # the first backup's copy is committed
    clock.advance(seconds=120)
    assert tasks.expire_leases(ctx, task_handlers().abandoned) == 1
    drain(ctx, "w-next")
    where = check_all_restorable(ctx, setup)
    assert set(where.values()) == {setup["b"]}
    assert set(repo_of(ctx, setup["b"]).list_manifests()) == set(setup["expected"])
    assert repo_of(ctx, setup["a"]).list_manifests() == []
    assert vault_row(ctx, setup["a"]).used_bytes == 0


@pytest.fixture()
def one_attempt_ctx(catalog_url, tmp_path, clock):
    settings = load_settings(env={}, data_dir=str(tmp_path / "data"), catalog_url=catalog_url,
                             task_lease_seconds=30, task_max_attempts=1)
    c = open_context(settings, clock=clock)
    yield c
    c.close()


def test_with_no_attempt_left_the_copies_are_cleaned_up(one_attempt_ctx, clock, tmp_path, monkeypatch):
    ctx = one_attempt_ctx
    tenant = _tenant(ctx)
    setup_ = make_setup(ctx, tenant, tmp_path)
    migrate(ctx, tenant, setup_, [setup_["d1"]])

    def die(*args, **kwargs):
        raise WorkerDied()
    monkeypatch.setattr(migration, "_switch", die)
    with pytest.raises(WorkerDied):
        Worker(ctx, "w-dies").run_once()
    monkeypatch.undo()
    assert len(repo_of(ctx, setup_["b"]).list_manifests()) == 1
    clock.advance(seconds=120)
    assert tasks.expire_leases(ctx, task_handlers().abandoned) == 1
    drain(ctx, "w-next")  # the cleanup task, then the GCs it queued
    assert repo_of(ctx, setup_["b"]).list_manifests() == []
    assert set(check_all_restorable(ctx, setup_).values()) == {setup_["a"]}
    assert repo_of(ctx, setup_["b"]).usage() == 0
    # the resource is the destination's now; naming it again moves its backups
    with ctx.tx() as s:
        assert migration.migrate_resources(s, ctx, tenant, setup_["a"], setup_["b"], [setup_["d1"]])
    drain(ctx)
    where = check_all_restorable(ctx, setup_)
    assert sum(v == setup_["b"] for v in where.values()) == 2


def _tenant(ctx):
    from opencbr.catalog.models import User

    info = iam.bootstrap(ctx)
    with ctx.tx() as s:
        user = s.scalar(select(User).where(User.account_id == info.account_id))
    return iam.principal_for_user(ctx, user.id, info.project_id)


def test_a_server_backup_moves_with_its_disks(ctx, tenant, tmp_path):
    from opencbr.services import resources

    imgs = [make_image(tmp_path / f"s{i}.img", 2 * MiB, seed=40 + i) for i in range(2)]
    with ctx.tx() as s:
        sys_disk = resources.register_disk(s, ctx, tenant, name="sys", path=imgs[0])
        data_disk = resources.register_disk(s, ctx, tenant, name="data", path=imgs[1])
    with ctx.tx() as s:
        server = resources.register_server(s, ctx, tenant, name="web", system_disk=sys_disk.id,
                                           data_disks=[data_disk.id], status="stopped")
    kw = dict(object_type="server", rtype="OS::Nova::Server")
    a, b = S.vault(ctx, tenant, "SA", [server.id], **kw), S.vault(ctx, tenant, "SB", **kw)
    top = S.backup_now(ctx, tenant, a.id).backups[0]
    drain(ctx)
    with ctx.tx() as s:
        migration.migrate_resources(s, ctx, tenant, a.id, b.id, [server.id])
    drain(ctx)
    with ctx.read() as s:
        rows = [s.get(Backup, top.id), *s.scalars(select(Backup).where(Backup.parent_id == top.id))]
        assert len(rows) == 3 and {r.vault_id for r in rows} == {b.id} and {r.status for r in rows} == {"available"}
        disks = {r.resource_id: r.id for r in rows[1:]}
    repo_b = repo_of(ctx, b.id)
    assert set(repo_b.list_manifests()) == set(disks.values()) and repo_of(ctx, a.id).list_manifests() == []
    for disk_id, img in ((sys_disk.id, imgs[0]), (data_disk.id, imgs[1])):
        out = tmp_path / f"{disk_id}.raw"
        repo_b.export_disk(disks[disk_id], str(out))
        assert sha256(out) == sha256(img)
