"""Restore tests (beyond the guide; issue 19): a vault's restore-test policy restores one backup on schedule
into a scratch place on the worker, checks what it restored, records the result and how long the restore
took (a measured recovery time), and removes the scratch place.

The policy itself (when, which backup, the custom check) is a ``VaultCheck`` of kind ``restore_test``
(services/verification.py sets and fires it). The checks (engine/restore_check.py): a disk image's blocks
against the backup's index plus ``e2fsck -fn`` / ``fsck.vfat -n`` on the file systems in it, a tree's
every file against its chunks; then the operator's own command, if the policy has one, run in the
scratch place with a time limit. A test whose restore or any check fails ends as a failed task of kind
``restore_test`` (BackupService.6640), so alarms on failed tasks see it. A restore test changes no backup:
it reads what any restore reads.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencbr.catalog.models import Backup, Task, Vault, VaultCheck
from opencbr.domain import backup as B
from opencbr.domain.errors import CBRError, NotFound
from opencbr.engine.restore_check import check_restored
from opencbr.services import tasks
from opencbr.services.context import ServiceContext
from opencbr.services.lookups import data_backups
from opencbr.services.progress import TaskProgress
from opencbr.services.repositories import repository

OPERATION = "restore_test"
RULES = ("latest", "oldest")
TEST_FAILED = "BackupService.6640"
#: Output of the custom check command kept in the result (its tail).
OUTPUT_KEPT = 2000


def queue_restore_test(s: Session, check: VaultCheck, now: datetime, *, request_id: str = "") -> Task | None:
    """Queue the test of the backup the policy's rule picks (None: the vault has no available backup)."""
    q = select(Backup).where(Backup.vault_id == check.vault_id, Backup.parent_id.is_(None),
                             Backup.status == B.AVAILABLE)
    if check.resource_id:
        q = q.where(Backup.resource_id == check.resource_id)
    order = Backup.created_at.desc() if check.backup_rule == "latest" else Backup.created_at.asc()
    b = s.scalars(q.order_by(order, Backup.id).limit(1)).first()
    if b is None:
        return None
    vault = s.get(Vault, check.vault_id)
    return tasks.new_task(s, project_id=check.project_id, operation_type=OPERATION, now=now, vault_id=vault.id,
                          vault_name=vault.name, resource_id=b.resource_id, resource_name=b.resource_name,
                          resource_type=b.resource_type, request_id=request_id,
                          params={"vault_check_id": check.id, "backup_id": b.id},
                          extra_info={OPERATION: {"backup_id": b.id, "rule": check.backup_rule}})


def scratch_dir(ctx: ServiceContext, task_id: str) -> str:
    return os.path.join(ctx.settings.data_dir, "restore-tests", task_id)


def remove_stale_scratch(ctx: ServiceContext) -> None:
    """Scratch places of restore tests that no longer run here (a worker killed mid-test left them)."""
    top = os.path.join(ctx.settings.data_dir, "restore-tests")
    names = os.listdir(top) if os.path.isdir(top) else []
    with ctx.read() as s:
        live = set(s.scalars(select(Task.id).where(Task.id.in_(names), Task.status.in_((tasks.WAITING, tasks.RUNNING)))))
    for name in set(names) - live:
        shutil.rmtree(os.path.join(top, name), ignore_errors=True)


def abandon_restore_test(s: Session, task: Task) -> None:
    """A restore test whose worker died: its policy says so (the next run removes the scratch place)."""
    check = s.get(VaultCheck, (task.params or {}).get("vault_check_id"))
    if check is not None and check.last_task_id == task.id:
        check.last_status, check.last_finished_at = "failed", task.ended_at or task.updated_at
        check.last_message = "the restore test was interrupted (its worker stopped)"


def run_restore_test(ctx: ServiceContext, run: tasks.TaskRun) -> None:
    check_id = run.params["vault_check_id"]
    with ctx.tx() as s:
        b = s.get(Backup, run.params["backup_id"])
        check = s.get(VaultCheck, check_id)
        if b is None or check is None:
            raise NotFound("the backup or the restore-test policy no longer exists")
        parts = [x.id for x in data_backups(s, b)]
        vault = s.get(Vault, b.vault_id)
        command, timeout = list(check.check_command or []), check.check_timeout_seconds
        check.last_task_id, check.last_status, check.last_started_at = run.task_id, "running", ctx.now()
        s.expunge(vault)
    remove_stale_scratch(ctx)
    scratch = scratch_dir(ctx, run.task_id)
    try:
        result = _restore_and_check(ctx, run, vault, b.id, parts, scratch, command, timeout)
    except Exception as e:
        result = {"backup_id": b.id, "ok": False, "problems": [f"the restore test could not run: {e}"],
                  "recovery_seconds": None, "check_seconds": None, "parts": []}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result["scratch_removed"] = not os.path.exists(scratch)
    with ctx.tx() as s:
        _record(s, check_id, ctx.now(), result)
    run.set_extra(**{OPERATION: result})
    if not result["ok"]:
        raise CBRError(f"the restore test of backup {b.id} failed: {result['problems'][0]}; see "
                       f"extra_info.{OPERATION}", code=TEST_FAILED, status=409)


def _restore_and_check(ctx: ServiceContext, run: tasks.TaskRun, vault: Vault, backup_id: str, parts: list[str],
                       scratch: str, command: list[str], timeout: int) -> dict:
    """Restore every data part of the backup under ``scratch``, timed, then check them."""
    os.makedirs(scratch, mode=0o700)
    repo = repository(ctx, vault, create=False)
    targets = []
    t0 = time.monotonic()
    for i, pid in enumerate(parts):
        span = TaskProgress(run, lo=70 * i // len(parts), hi=70 * (i + 1) // len(parts))
        target = os.path.join(scratch, pid)
        if repo.kind(pid) == "tree":
            os.mkdir(target, 0o700)
        else:
            target += ".img"
        repo.restore(pid, target, progress=span)
        targets.append((pid, target))
    recovery = time.monotonic() - t0
    run.progress(70)
    t1 = time.monotonic()
    reports = [check_restored(repo.chunks, pid, target, scratch=scratch).to_dict() for pid, target in targets]
    problems = [p for r in reports for p in r["problems"]]
    custom = _custom_check(command, timeout, scratch, backup_id) if command else None
    if custom is not None and not custom["ok"]:
        problems.append(custom["reason"])
    return {"backup_id": backup_id, "ok": not problems, "problems": problems[:20],
            "recovery_seconds": round(recovery, 3), "check_seconds": round(time.monotonic() - t1, 3),
            "parts": reports, "custom_check": custom}


def _custom_check(command: list[str], timeout: int, scratch: str, backup_id: str) -> dict:
    """The operator's own check, in the scratch place (``$OPENCBR_RESTORE_DIR``); exit 0 passes."""
    env = {**os.environ, "OPENCBR_RESTORE_DIR": scratch, "OPENCBR_BACKUP_ID": backup_id}
    try:
        done = subprocess.run(command, cwd=scratch, env=env, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return {"ok": False, "exit_code": None, "output": "", "reason": f"the check command ran over {timeout} s"}
    except OSError as e:
        return {"ok": False, "exit_code": None, "output": "", "reason": f"the check command could not start: {e}"}
    output = (done.stdout + done.stderr)[-OUTPUT_KEPT:]
    return {"ok": done.returncode == 0, "exit_code": done.returncode, "output": output,
            "reason": f"the check command exited with {done.returncode}"}


def _record(s: Session, check_id: str, now: datetime, result: dict) -> None:
    check = s.get(VaultCheck, check_id)
    if check is None:
        return
    check.last_status = "success" if result["ok"] else "failed"
    check.last_finished_at, check.last_backup_ids = now, [result["backup_id"]]
    check.last_backups_checked = 1
    check.last_recovery_seconds, check.last_check_seconds = result["recovery_seconds"], result["check_seconds"]
    check.last_message = "restored and checked" if result["ok"] else "; ".join(result["problems"][:3])[:2000]
