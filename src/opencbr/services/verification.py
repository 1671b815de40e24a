"""Scheduled checks of a vault (beyond the guide; issue 19): verify policies and restore-test policies.

A vault has at most one check of each kind (``VaultCheck``): ``verify`` re-reads a share of its backups'
chunks every N days; ``restore_test`` restores one backup to a scratch place and checks it
(services/restore_tests.py). The scheduler fires them (:func:`fire_due_checks`) exactly once per due time,
however many schedulers run: each firing moves ``next_run_at`` on with a compare-and-set in the
transaction that queues the task.

What a verify that finds damage does, and why:

- the task (kind ``verify``) fails with BackupService.6631 and lists the backups and chunks, so alarms on
  failed tasks by kind and the task list see it;
- each backup that needs a damaged chunk turns ``error`` with error_code BackupService.6630 and a
  ``verification`` entry in its details: ``error`` because it cannot be restored whole (restore and
  replication take only available backups), and because retention then stops counting it as a kept
  copy; the API shows the status and ``error_info``;
- the damaged chunks are recorded in the vault's store (engine/chunks/damage.py): the next backup of the
  live source stores them again instead of deduplicating against the bad copy, and the next verify,
  finding them intact, clears the record and turns those backups ``available`` again;
- the vault's check row keeps the outcome (``last_*``) for the console, the CLI and metrics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from opencbr.catalog.models import Backup, Task, Vault, VaultCheck, VaultResource
from opencbr.domain import backup as B
from opencbr.domain.errors import DataCorruption, Forbidden, InvalidParameter, NotFound
from opencbr.engine import Missing
from opencbr.engine.chunks.damage import clear_damaged, damaged_digests, record_damaged
from opencbr.services import backups, restore_tests, tasks
from opencbr.services.context import ServiceContext
from opencbr.services.lookups import data_backups, get_vault
from opencbr.services.principal import Principal
from opencbr.services.progress import TaskProgress
from opencbr.services.repositories import repository
from opencbr.services.utc import naive

VERIFY, RESTORE_TEST = "verify", "restore_test"
KINDS = (VERIFY, RESTORE_TEST)
#: A backup a verify found damaged (its status is ``error`` until a verify finds it whole again).
DAMAGED = B.DAMAGED_BY_VERIFY
VERIFY_FOUND_DAMAGE = "BackupService.6631"
BAD_POLICY = "BackupService.6632"
NO_POLICY = "BackupService.6633"
COMMAND_NEEDS_OPERATOR = "BackupService.6634"
MAX_INTERVAL_DAYS = 366
MAX_CHECK_TIMEOUT = 86400


# ------------------------------------------------------------------------------------ policies
def set_check(s: Session, ctx: ServiceContext, p: Principal, vault_id: str, kind: str, spec: dict) -> VaultCheck:
    """Create or change the vault's check of ``kind`` (fields not in ``spec`` keep their value)."""
    p.require_write()
    vault = get_vault(s, p.project_id, vault_id)
    check = s.scalar(select(VaultCheck).where(VaultCheck.vault_id == vault.id, VaultCheck.kind == kind))
    now = ctx.now()
    if check is None:
        check = VaultCheck(project_id=vault.project_id, vault_id=vault.id, kind=kind, enabled=True, interval_days=7,
                           share_percent=100, backup_rule="latest", resource_id="", check_command=[],
                           check_timeout_seconds=600, next_run_at=now, created_at=now, last_backup_ids=[])
        s.add(check)
    _apply_spec(s, p, check, kind, spec, now)
    check.updated_at = now
    s.flush()
    return check


def _apply_spec(s: Session, p: Principal, check: VaultCheck, kind: str, spec: dict, now: datetime) -> None:
    if "enabled" in spec:
        check.enabled = _bool(spec["enabled"], "enabled")
    if "interval_days" in spec:
        check.interval_days = _int(spec["interval_days"], "interval_days", 1, MAX_INTERVAL_DAYS)
    if "start_at" in spec:
        check.next_run_at = _time(spec["start_at"], "start_at")
    if kind == VERIFY:
        if "share_percent" in spec:
            check.share_percent = _int(spec["share_percent"], "share_percent", 1, 100)
        _refuse(spec, ("backup_rule", "resource_id", "check_command", "check_timeout_seconds"), kind)
        return
    _refuse(spec, ("share_percent",), kind)
    if "backup_rule" in spec:
        if spec["backup_rule"] not in restore_tests.RULES:
            raise InvalidParameter(f"backup_rule must be one of {', '.join(restore_tests.RULES)}", code=BAD_POLICY)
        check.backup_rule = spec["backup_rule"]
    if "resource_id" in spec:
        rid = spec["resource_id"] or ""
        if rid and s.scalar(select(VaultResource.id).where(VaultResource.vault_id == check.vault_id,
                                                           VaultResource.resource_id == rid)) is None:
            raise InvalidParameter(f"resource {rid} is not a resource of this vault", code=BAD_POLICY)
        check.resource_id = rid
    if "check_command" in spec:
        check.check_command = _command(p, spec["check_command"])
    if "check_timeout_seconds" in spec:
        check.check_timeout_seconds = _int(spec["check_timeout_seconds"], "check_timeout_seconds", 1,
                                           MAX_CHECK_TIMEOUT)


def _command(p: Principal, value: object) -> list[str]:
    if value in (None, [], ""):
        return []
    if not isinstance(value, list) or not all(isinstance(a, str) and a and "\0" not in a for a in value) \
            or len(value) > 64:
        raise InvalidParameter("check_command must be a list of at most 64 non-empty arguments", code=BAD_POLICY)
    if not p.is_operator:  # it runs on the workers' machines as the service's user
        raise Forbidden("only the operator may set a custom check command (it runs on the service's machines)",
                        code=COMMAND_NEEDS_OPERATOR)
    return value


def _refuse(spec: dict, fields: tuple[str, ...], kind: str) -> None:
    bad = [f for f in fields if f in spec]
    if bad:
        raise InvalidParameter(f"{', '.join(bad)} does not apply to a {kind} policy", code=BAD_POLICY)


def _int(value: object, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidParameter(f"{name} must be a whole number from {lo} to {hi}", code=BAD_POLICY)
    return value


def _bool(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidParameter(f"{name} must be true or false", code=BAD_POLICY)
    return value


def _time(value: object, name: str) -> datetime:
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidParameter(f"{name} must be an ISO 8601 time", code=BAD_POLICY) from None
    return naive(t)


def get_check(s: Session, p: Principal, vault_id: str, kind: str) -> VaultCheck:
    vault = get_vault(s, p.project_id, vault_id)
    check = s.scalar(select(VaultCheck).where(VaultCheck.vault_id == vault.id, VaultCheck.kind == kind))
    if check is None:
        raise NotFound(f"vault {vault.name} has no {kind.replace('_', ' ')} policy", code=NO_POLICY)
    return check


def list_checks(s: Session, p: Principal, vault_id: str) -> list[VaultCheck]:
    vault = get_vault(s, p.project_id, vault_id)
    return list(s.scalars(select(VaultCheck).where(VaultCheck.vault_id == vault.id).order_by(VaultCheck.kind)))


def delete_check(s: Session, p: Principal, vault_id: str, kind: str) -> None:
    p.require_write()
    s.delete(get_check(s, p, vault_id, kind))


def run_check_now(s: Session, ctx: ServiceContext, p: Principal, vault_id: str, kind: str) -> Task | None:
    """Queue the vault's check now, outside its schedule (None: no backup to check)."""
    p.require_data_access(f"running a {kind.replace('_', ' ')}")
    return queue_check(s, ctx, get_check(s, p, vault_id, kind), ctx.now(), request_id=p.request_id)


# ------------------------------------------------------------------------------------ scheduling
@dataclass
class FiredCheck:
    check_id: str
    vault_id: str
    kind: str
    task_id: str | None  # None: skipped (see reason)
    reason: str = ""


def fire_due_checks(ctx: ServiceContext, now: datetime | None = None) -> list[FiredCheck]:
    """Queue every enabled check whose time has come, each exactly once: a firing moves ``next_run_at``
    past ``now`` with a compare-and-set, so of several schedulers only one queues it."""
    now = now or ctx.now()
    with ctx.read() as s:
        due = s.execute(select(VaultCheck.id, VaultCheck.next_run_at).where(
            VaultCheck.enabled.is_(True), VaultCheck.next_run_at <= now)).all()
    fired = []
    for check_id, due_at in due:
        with ctx.tx() as s:
            check = s.get(VaultCheck, check_id)
            if check is None:
                continue  # removed meanwhile
            nxt = _next_run(due_at, check.interval_days, now)
            won = s.execute(update(VaultCheck).where(VaultCheck.id == check_id, VaultCheck.next_run_at == due_at)
                            .values(next_run_at=nxt).execution_options(synchronize_session=False)).rowcount
            if won != 1:
                continue  # another scheduler fired it
            s.refresh(check)
            fired.append(_fire(s, ctx, check, now))
    return fired


def _next_run(due_at: datetime, interval_days: int, now: datetime) -> datetime:
    """The first run after ``now`` on the check's grid (runs missed while nothing ran are not caught up)."""
    step = timedelta(days=interval_days)
    return due_at + step * (int((now - due_at) / step) + 1)


def _fire(s: Session, ctx: ServiceContext, check: VaultCheck, now: datetime) -> FiredCheck:
    last = s.get(Task, check.last_task_id) if check.last_task_id else None
    if last is not None and last.status in (tasks.WAITING, tasks.RUNNING):
        return FiredCheck(check.id, check.vault_id, check.kind, None, f"the last run ({last.id}) has not finished")
    task = queue_check(s, ctx, check, now)
    if task is None:
        return FiredCheck(check.id, check.vault_id, check.kind, None, "the vault has no backup to check")
    return FiredCheck(check.id, check.vault_id, check.kind, task.id)


def queue_check(s: Session, ctx: ServiceContext, check: VaultCheck, now: datetime, *,
                request_id: str = "") -> Task | None:
    if check.kind == RESTORE_TEST:
        task = restore_tests.queue_restore_test(s, check, now, request_id=request_id)
    else:
        task = _queue_verify(s, check, now, request_id)
    if task is None:
        check.last_status, check.last_message, check.last_finished_at = "skipped", "no backup to check", now
        return None
    check.last_task_id = task.id
    return task


def _queue_verify(s: Session, check: VaultCheck, now: datetime, request_id: str) -> Task | None:
    ids = backups_to_verify(s, check)
    if not ids:
        return None
    vault = s.get(Vault, check.vault_id)
    params = {"vault_check_id": check.id, "vault_id": vault.id, "backup_ids": ids}
    return tasks.new_task(s, project_id=check.project_id, operation_type=VERIFY, now=now, vault_id=vault.id,
                          vault_name=vault.name, request_id=request_id, params=params,
                          extra_info={"verify": {"vault_id": vault.id, "backup_ids": ids}})


def backups_to_verify(s: Session, check: VaultCheck) -> list[str]:
    """Every backup a verify found damaged (to see whether it was repaired), and ``share_percent`` of
    the available ones, those verified longest ago (or never) first, so runs take turns over the vault."""
    rows = s.scalars(select(Backup).where(Backup.vault_id == check.vault_id, Backup.parent_id.is_(None),
                                          Backup.status.in_((B.AVAILABLE, B.ERROR)))).all()
    damaged = [b for b in rows if b.status == B.ERROR and b.error_code == DAMAGED]
    healthy = sorted((b for b in rows if b.status == B.AVAILABLE),
                     key=lambda b: (((b.details or {}).get("verification") or {}).get("at") or "", b.created_at))
    share = math.ceil(len(healthy) * check.share_percent / 100)
    return [b.id for b in damaged] + [b.id for b in healthy[:share]]


# ------------------------------------------------------------------------------------ the task
def run_verify_task(ctx: ServiceContext, run: tasks.TaskRun) -> None:
    """Tasks of kind ``verify``: a policy's verify of a vault, or the verify of one backup (backups.py)."""
    if "vault_check_id" in run.params:
        run_vault_verify(ctx, run)
    else:
        backups.run_verify(ctx, run)


def abandon_verify_task(s: Session, task: Task) -> None:
    """A policy's verify whose worker died (its lease ran out, no attempt left): the policy says it failed,
    and why, instead of showing ``running`` until the next run (a single backup's verify leaves nothing)."""
    check_id = (task.params or {}).get("vault_check_id")
    check = s.get(VaultCheck, check_id) if check_id else None
    if check is not None and check.last_task_id == task.id:
        record_error(s, check.id, task.ended_at or task.updated_at, f"the verify was interrupted: {task.error_message}")


def run_vault_verify(ctx: ServiceContext, run: tasks.TaskRun) -> None:
    now = ctx.now()
    with ctx.tx() as s:
        vault = s.get(Vault, run.params["vault_id"])
        if vault is None:
            raise NotFound("the vault no longer exists")
        _started(s, run.params["vault_check_id"], run.task_id, now)
        targets = [(b.id, [x.id for x in data_backups(s, b)]) for bid in run.params["backup_ids"]
                   if (b := s.get(Backup, bid)) is not None and b.status in (B.AVAILABLE, B.ERROR)]
        s.expunge(vault)
    try:
        repo = repository(ctx, vault, create=False)
        found: dict[str, list[dict]] = {}  # backup id -> its bad chunks
        for i, (bid, parts) in enumerate(targets):
            span = TaskProgress(run, lo=95 * i // len(targets), hi=95 * (i + 1) // len(targets))
            found[bid] = [c for pid in parts for c in _bad_chunks(repo, pid, span)]
        bad = {bytes.fromhex(c["digest"]) for chunks in found.values() for c in chunks if c["digest"]}
        record_damaged(repo.chunks, bad, {"task_id": run.task_id, "at": now.isoformat()})
        healed = _clear_healed(repo.chunks, bad)
        index_damaged = repo.verify_index()  # every index object of the vault, used or not
    except Exception as e:
        with ctx.tx() as s:
            record_error(s, run.params["vault_check_id"], ctx.now(), f"the verify could not run: {e}")
        raise
    damaged = {bid: chunks for bid, chunks in found.items() if chunks}
    outcome = {"vault_id": vault.id, "backups_checked": len(targets), "damaged_backups": len(damaged),
               "damaged_chunks": len(bad), "chunks_repaired": len(healed), "damaged_index_objects": index_damaged,
               "backups": [{"backup_id": bid, "ok": not chunks, "damaged": chunks[:backups.VERIFY_LISTED]}
                           for bid, chunks in found.items()]}
    with ctx.tx() as s:
        _mark_backups(s, found, run.task_id, ctx.now())
        _finished(s, run.params["vault_check_id"], ctx.now(), outcome, [t[0] for t in targets])
    run.set_extra(verify=outcome)
    if damaged:
        first = next(iter(damaged.values()))[0]
        raise DataCorruption(f"verify found {len(bad)} damaged chunk(s) in {len(damaged)} of {len(targets)} "
                             f"backup(s) of vault {vault.name}: first chunk {first['digest']} ({first['reason']}); "
                             f"see extra_info.verify", code=VERIFY_FOUND_DAMAGE)
    if index_damaged:
        raise DataCorruption(f"verify found {len(index_damaged)} damaged index object(s) in vault {vault.name}: "
                             f"first {index_damaged[0]['object']} ({index_damaged[0]['reason']}); the backups' "
                             f"chunks read intact; the vault's next garbage collection rewrites the index; "
                             f"see extra_info.verify", code=VERIFY_FOUND_DAMAGE)


def _bad_chunks(repo, backup_id: str, span) -> list[dict]:
    """The damaged and missing chunks of one backup's data (a missing manifest counts as one)."""
    try:
        rep = repo.verify(backup_id, span)
    except Missing as e:
        return [{"digest": "", "reason": str(e), "backup_id": backup_id}]
    return [{"digest": c.digest, "reason": c.reason, "backup_id": backup_id} for c in rep.damaged + rep.missing]


def _clear_healed(cs, still_bad: set[bytes]) -> set[bytes]:
    """Recorded chunks that read intact now (a later backup stored them again): no longer damaged."""
    healed = set()
    for d in damaged_digests(cs) - still_bad:
        try:
            cs.get_chunk(d)
        except Exception:  # noqa: BLE001 - still damaged or missing: the record stays
            continue
        healed.add(d)
    clear_damaged(cs, healed)
    return healed


def _mark_backups(s: Session, found: dict[str, list[dict]], task_id: str, now: datetime) -> None:
    for bid, chunks in found.items():
        top = s.get(Backup, bid)
        if top is None:
            continue
        for b in {top.id: top, **{x.id: x for x in data_backups(s, top)}}.values():
            mine = [c for c in chunks if b is top or c["backup_id"] == b.id]
            b.details = {**(b.details or {}), "verification": {
                "at": now.isoformat(), "task_id": task_id, "ok": not mine, "damaged_chunks": len(mine)}}
            if mine and b.status == B.AVAILABLE:
                b.status, b.error_code, b.updated_at = B.ERROR, DAMAGED, now
                b.error_message = (f"verify task {task_id} found {len(mine)} damaged chunk(s) in this backup; it "
                                   "becomes available again when a later backup of the source has stored them anew "
                                   "and a verify finds them intact")
            elif not mine and b.status == B.ERROR and b.error_code == DAMAGED:
                b.status, b.error_code, b.error_message, b.updated_at = B.AVAILABLE, "", "", now


def _started(s: Session, check_id: str, task_id: str, now: datetime) -> None:
    check = s.get(VaultCheck, check_id)
    if check is not None:
        check.last_task_id, check.last_status, check.last_started_at = task_id, "running", now


def record_error(s: Session, check_id: str, now: datetime, message: str) -> None:
    check = s.get(VaultCheck, check_id)
    if check is not None:
        check.last_status, check.last_finished_at, check.last_message = "failed", now, message[:2000]


def _finished(s: Session, check_id: str, now: datetime, outcome: dict, backup_ids: list[str]) -> None:
    check = s.get(VaultCheck, check_id)
    if check is None:
        return
    damaged = outcome["damaged_backups"]
    index = outcome.get("damaged_index_objects") or []
    check.last_status = "failed" if damaged or index else "success"
    check.last_finished_at, check.last_backup_ids = now, backup_ids
    check.last_backups_checked, check.last_damaged_backups = outcome["backups_checked"], damaged
    check.last_damaged_chunks = outcome["damaged_chunks"]
    check.last_message = (f"{damaged} of {outcome['backups_checked']} backup(s) damaged, "
                          f"{outcome['damaged_chunks']} chunk(s)" if damaged else
                          f"{outcome['backups_checked']} backup(s) intact")
    if index:
        check.last_message += f"; {len(index)} damaged index object(s), first {index[0]['object']}"
