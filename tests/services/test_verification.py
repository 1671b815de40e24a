"""Verify policies (issue 19, item 3) on both catalogs with a real worker, real files and the scheduler under
a fake clock: a policy fires exactly once per due time; a flipped byte in a stored pack is found by the
scheduled verify (a failed ``verify`` task naming the chunk, the backup marked, the chunk recorded in the
store); the next backup of the live source stores the chunk again, and the next verify turns the backup
available again; a share of backups takes turns; another project sees none of it."""

from __future__ import annotations

import dataclasses
import os
from datetime import timedelta

import pytest
from sqlalchemy import select

from opencbr.catalog.models import Backup, Task, Vault, VaultCheck
from opencbr.domain.errors import Forbidden, InvalidParameter, NotFound
from opencbr.engine.chunks.damage import damaged_digests
from opencbr.scheduler.loop import Scheduler
from opencbr.services import backups, resources, retention, tasks, vaults, verification
from opencbr.services.repositories import repository
from opencbr.worker.runner import Worker, task_handlers
from tests.support.disks import MiB, flip_byte, make_image
from tests.support.scheduler import drain, read_task


def _backup(ctx, p, vault_id: str) -> str:
    with ctx.tx() as s:
        cp = backups.create_checkpoint(s, ctx, p, vault_id)
    drain(ctx)
    return cp.backups[0].id


def _row(ctx, model, row_id):
    with ctx.read() as s:
        row = s.get(model, row_id)
        s.expunge(row)
        return row


@pytest.fixture()
def disk_vault(rctx, owner, roots):
    """A vault holding one backup of a 2 MiB disk (one pack): (vault id, backup id)."""
    img = make_image(roots / "d.img", 2 * MiB, seed=5)
    with rctx.tx() as s:
        disk = resources.register_disk(s, rctx, owner, name="d", path=img)
    with rctx.tx() as s:
        vault = vaults.create_vault(s, rctx, owner, {"name": "v-verify", "billing": {
            "object_type": "disk", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"},
            "resources": [{"id": disk.id, "type": "OS::Cinder::Volume"}]}).vault
    return vault.id, _backup(rctx, owner, vault.id)


def _packs(ctx, vault_id: str) -> list[str]:
    out = []
    for d, _, files in os.walk(os.path.join(ctx.settings.data_dir, "objects", "vaults", vault_id, "data")):
        out += [os.path.join(d, f) for f in files]
    return out


def test_scheduled_verify_finds_damage_and_the_next_backup_repairs_it(rctx, owner, disk_vault, clock):
    vault_id, first = disk_vault
    with rctx.tx() as s:
        verification.set_check(s, rctx, owner, vault_id, "verify", {"interval_days": 7, "share_percent": 100})
    sched = Scheduler(rctx)
    fired = sched.tick().checks
    assert [c.kind for c in fired] == ["verify"] and fired[0].task_id
    assert sched.tick().checks == [] and Scheduler(rctx, "other").tick().checks == []  # exactly once
    drain(rctx)
    assert read_task(rctx, fired[0].task_id).status == "success"

    [pack] = _packs(rctx, vault_id)
    flip_byte(pack)
    clock.advance(days=7)
    [again] = Scheduler(rctx, "another").tick().checks  # any scheduler, once per due time
    drain(rctx)
    task = read_task(rctx, again.task_id)
    assert task.status == "failed" and task.operation_type == "verify"
    assert task.error_code == verification.VERIFY_FOUND_DAMAGE
    report = task.extra_info["verify"]
    assert report["damaged_backups"] == 1 and report["damaged_chunks"] >= 1
    bad = report["backups"][0]["damaged"][0]["digest"]
    assert bad in task.error_message
    b = _row(rctx, Backup, first)
    assert b.status == "error" and b.error_code == verification.DAMAGED and again.task_id in b.error_message
    assert b.details["verification"]["ok"] is False
    with rctx.read() as s:
        check = s.scalar(select(VaultCheck).where(VaultCheck.vault_id == vault_id))
        assert (check.last_status, check.last_damaged_backups) == ("failed", 1)
        assert check.last_damaged_chunks == report["damaged_chunks"]
    vault = _row(rctx, Vault, vault_id)
    assert bytes.fromhex(bad) in damaged_digests(repository(rctx, vault, create=False).chunks)

    with rctx.tx() as s:  # an automatic backup two months old: guide 5.2's rule for failed ones must not apply
        row = s.get(Backup, first)
        row.auto_trigger, row.created_at = True, clock.now - timedelta(days=60)
    retention.retention_sweep(rctx, now=clock.now)
    assert _row(rctx, Backup, first).status == "error"

    second = _backup(rctx, owner, vault_id)  # the live source still holds the data: stored anew
    assert _row(rctx, Backup, second).status == "available"
    with rctx.tx() as s:
        repair = verification.run_check_now(s, rctx, owner, vault_id, "verify")
    drain(rctx)
    assert read_task(rctx, repair.id).status == "success", read_task(rctx, repair.id).error_message
    b = _row(rctx, Backup, first)
    assert (b.status, b.error_code, b.error_message) == ("available", "", "")
    assert read_task(rctx, repair.id).extra_info["verify"]["chunks_repaired"] >= 1
    assert damaged_digests(repository(rctx, vault, create=False).chunks) == set()


def test_share_takes_turns_policy_rules_and_tenant_isolation(rctx, owner, stranger, disk_vault, clock):
    vault_id, first = disk_vault
    clock.advance(minutes=1)
    second = _backup(rctx, owner, vault_id)
    with rctx.tx() as s:
        verification.set_check(s, rctx, owner, vault_id, "verify", {"interval_days": 1, "share_percent": 50})
    seen = []
    for _ in range(2):
        [fired] = Scheduler(rctx).tick().checks
        drain(rctx)
        seen += read_task(rctx, fired.task_id).params["backup_ids"]
        clock.advance(days=1)
    assert sorted(seen) == sorted([first, second])

    with rctx.tx() as s:
        with pytest.raises(InvalidParameter):
            verification.set_check(s, rctx, owner, vault_id, "verify", {"share_percent": 0})
        with pytest.raises(InvalidParameter):
            verification.set_check(s, rctx, owner, vault_id, "verify", {"check_command": ["true"]})
        with pytest.raises(InvalidParameter):
            verification.set_check(s, rctx, owner, vault_id, "restore_test", {"backup_rule": "newest"})
    for call in (lambda s: verification.set_check(s, rctx, stranger, vault_id, "verify", {}),
                 lambda s: verification.get_check(s, stranger, vault_id, "verify")):
        with rctx.tx() as s, pytest.raises(NotFound):
            call(s)
    with rctx.tx() as s:
        verification.set_check(s, rctx, owner, vault_id, "verify", {})
    with rctx.tx() as s, pytest.raises(NotFound):
        verification.run_check_now(s, rctx, stranger, vault_id, "verify")
    tenant_admin = dataclasses.replace(owner, is_operator=False)  # the command runs on the service's machines
    with rctx.tx() as s, pytest.raises(Forbidden):
        verification.set_check(s, rctx, tenant_admin, vault_id, "restore_test", {"check_command": ["true"]})


class WorkerDied(BaseException):
    """Stands for a worker killed mid-task: nothing of the handler's own clean-up runs."""


def test_missed_runs_are_caught_up_once_and_a_dead_workers_verify_fails_the_policy(rctx, owner, disk_vault, clock,
                                                                                  monkeypatch):
    vault_id, _ = disk_vault
    with rctx.tx() as s:
        check_id = verification.set_check(s, rctx, owner, vault_id, "verify", {"interval_days": 1}).id
    assert len(Scheduler(rctx).tick().checks) == 1
    drain(rctx)
    clock.advance(days=5, hours=3)  # the scheduler was down for five periods: one run at the next start
    sched = Scheduler(rctx)
    assert len(sched.tick().checks) == 1 and sched.tick().checks == []
    drain(rctx)
    check = _row(rctx, VaultCheck, check_id)
    assert check.last_status == "success" and clock.now < check.next_run_at <= clock.now + timedelta(days=1)

    rctx.settings = dataclasses.replace(rctx.settings, task_max_attempts=1)
    clock.advance(days=1)
    [fired] = Scheduler(rctx).tick().checks

    def die(*args, **kwargs):
        raise WorkerDied()

    monkeypatch.setattr(verification, "_bad_chunks", die)
    with pytest.raises(WorkerDied):
        Worker(rctx, "w-dies").run_once()
    monkeypatch.undo()
    assert _row(rctx, VaultCheck, check_id).last_status == "running"
    clock.advance(seconds=120)  # past the lease: the janitor abandons the task
    assert tasks.expire_leases(rctx, task_handlers().abandoned) == 1
    check = _row(rctx, VaultCheck, check_id)
    assert read_task(rctx, fired.task_id).status == "failed"
    assert check.last_status == "failed" and check.last_finished_at == clock.now
    assert "interrupted" in check.last_message and "stopped responding" in check.last_message
    clock.advance(days=1)  # the next run is not held back by the dead one
    assert Scheduler(rctx).tick().checks[0].task_id


def test_a_verify_names_a_damaged_index_object_no_backup_uses_and_gc_rewrites_the_index(rctx, owner, disk_vault):
    """docs/verification.md, "Damaged index objects": the backups stay available (their chunks read), the
    verify tasks fail naming the object, and the GC that rewrites the index clears it."""
    vault_id, first = disk_vault
    repo = repository(rctx, _row(rctx, Vault, vault_id), create=False)
    rel = repo.chunks.write_index([(os.urandom(16).hex(), [(os.urandom(32), 0, 100)])])  # lists a pack long gone
    key = os.path.join(rctx.settings.data_dir, "objects", "vaults", vault_id, rel)
    with open(key, "r+b") as fh:
        fh.truncate(os.path.getsize(key) // 2)
    with rctx.tx() as s:
        check_id = verification.set_check(s, rctx, owner, vault_id, "verify", {"interval_days": 7}).id
    with rctx.tx() as s:
        run = verification.run_check_now(s, rctx, owner, vault_id, "verify")
        single = backups.verify_backup(s, rctx, owner, first)
    drain(rctx)
    for task_id in (run.id, single):
        task = read_task(rctx, task_id)
        assert task.status == "failed" and rel in task.error_message, task.error_message
    report = read_task(rctx, run.id).extra_info["verify"]
    assert [d["object"] for d in report["damaged_index_objects"]] == [rel] and report["damaged_backups"] == 0
    assert [d["object"] for d in read_task(rctx, single).extra_info["verify"]["disks"][0]["index_damaged"]] == [rel]
    assert _row(rctx, Backup, first).status == "available"
    check = _row(rctx, VaultCheck, check_id)
    assert check.last_status == "failed" and rel in check.last_message

    backups.queue_gc(rctx, owner.project_id, _row(rctx, Vault, vault_id))  # (as a deleted backup does)
    drain(rctx)
    with rctx.read() as s:
        gc = s.scalar(select(Task).where(Task.operation_type == "gc", Task.vault_id == vault_id))
        assert gc.status == "success"
        assert gc.extra_info["gc"]["index_objects_damaged"] == [rel]  # every pack it could list is known: replaced
        assert gc.extra_info["gc"]["packs_unreadable"] == []
    with rctx.tx() as s:
        again = verification.run_check_now(s, rctx, owner, vault_id, "verify")
    drain(rctx)
    assert read_task(rctx, again.id).status == "success", read_task(rctx, again.id).error_message
