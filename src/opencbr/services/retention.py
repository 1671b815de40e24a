"""Retention (guide 5.2 Retention Rule, 5.7, 13.5.2; the rules are ``domain.retention``):
``apply_retention`` plans with ``domain.retention.plan_retention`` over the top-level backups of one
resource in one vault and deletes what the plan prunes through ``deletion.queue_delete_for_system``,
recording a ``retention`` task. The backup task calls :func:`apply_retention_after_backup` after every
successful backup (guide 13.5.2) and the scheduler sweeps every vault periodically, in bounded passes
(:func:`sweep_pass`; :func:`retention_sweep` for a whole round at once; guide 5.2, Retention Rule notes).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from opencbr.catalog.models import Backup, BackupUsage, Policy, PolicyBinding, SweepCursor, Vault
from opencbr.domain import backup as B
from opencbr.domain import policy as P
from opencbr.domain import resource as R
from opencbr.domain.errors import InvalidParameter, StateConflict
from opencbr.domain.retention import BackupRecord, CurrentRetention, RetentionPlan, plan_retention
from opencbr.services import tasks
from opencbr.services.context import ServiceContext
from opencbr.services.deletion import queue_delete_for_system
from opencbr.services.lookups import get_vault
from opencbr.services.policies import get_policy, spec_of, vaults_bound_to
from opencbr.services.principal import Principal
from opencbr.services.utc import aware, fmt, naive

log = logging.getLogger("opencbr.policies")


@dataclass
class ResourceRetention:
    """The retention plan of one resource in one vault, and what was done with it."""

    vault_id: str
    resource_id: str
    resource_name: str
    policy_id: str | None
    plan: RetentionPlan
    names: dict[str, str]
    deleted: list[tuple[str, str]] = field(default_factory=list)  # (backup id, delete task id)
    task_id: str | None = None


def _current(s: Session, vault_id: str) -> tuple[CurrentRetention | None, Policy | None]:
    """The retention of the vault's backup policy now; None when the vault has none (guide 5.7)."""
    policy = s.scalar(select(Policy).join(PolicyBinding, PolicyBinding.policy_id == Policy.id).where(
        PolicyBinding.vault_id == vault_id, PolicyBinding.operation_type == P.BACKUP))
    if policy is None:
        return None, None
    return spec_of(policy).current_retention(), policy


def _carried(s: Session, vault_id: str, resource_id: str) -> CurrentRetention | None:
    """Guide 5.3: a replication policy's retention rule says "how backup replicas will be retained in the
    destination region". A replication vault has no policy of its own here: each automatic replica
    carries the rule of the policy that made it, with its long-term levels (services/replication.py), and
    the newest one's is the one that applies to the resource's replicas (as a policy's current rule does
    in a backup vault)."""
    rule = s.scalar(select(Backup.retention_rule).where(
        Backup.vault_id == vault_id, Backup.resource_id == resource_id, Backup.parent_id.is_(None),
        Backup.auto_trigger.is_(True), Backup.retention_rule != "").order_by(Backup.created_at.desc()).limit(1))
    try:
        return CurrentRetention.decode(rule) if rule else None
    except ValueError:
        return None


def _record_of(b) -> BackupRecord:
    """``b``: a Backup, or a row of the columns ``_PLAN_COLUMNS`` names."""
    rule = None
    if b.auto_trigger and b.retention_rule:
        try:
            rule = CurrentRetention.decode(b.retention_rule).rule  # a replica's text also has long-term levels
        except ValueError:
            rule = None  # unknown encoding: treated as permanent, i.e. never expires by itself
    # A backup a verify found damaged is neither a failed backup (guide 5.2's rule for those would delete it
    # a month after it was made, before the next backup could repair it) nor a copy retention may count on.
    status = "damaged" if b.status == B.ERROR and b.error_code == B.DAMAGED_BY_VERIFY else b.status
    return BackupRecord(b.id, aware(b.created_at), bool(b.auto_trigger), status, bool(b.used_by_image), rule)


#: What planning reads of a backup (``_record_of``, ``expired_manual``): not the JSON details.
_PLAN_COLUMNS = (Backup.id, Backup.created_at, Backup.auto_trigger, Backup.status, Backup.error_code,
                 Backup.used_by_image, Backup.retention_rule, Backup.expired_at)


def _plan(s: Session, vault_id: str, resource_id: str, current: CurrentRetention | None, now: datetime, *,
          lock: bool) -> tuple[RetentionPlan, dict[str, Backup]]:
    q = select(Backup).where(Backup.vault_id == vault_id, Backup.resource_id == resource_id,
                             Backup.parent_id.is_(None)).order_by(Backup.created_at, Backup.id)
    if lock:
        q = q.with_for_update()
    rows = {b.id: b for b in s.scalars(q)}
    return plan_retention([_record_of(b) for b in rows.values()], current, aware(now)), rows


def expired_manual(rows, now: datetime) -> list[tuple[Backup, str]]:
    """Manual backups made with ``retention_duration_days`` (CBR v3 CheckpointParam, "manual backups
    only"; their ``expired_at``) are deleted once that time has passed. Policy retention never touches
    manual backups (guide 5.2); this is the user's own choice for that one backup. A backup used by an
    image is kept (guide 5.2, 6.2)."""
    out = []
    for b in rows:
        # An automatic backup without a rule but with an expiry had its expiry set (update_expiration_time).
        if ((not b.auto_trigger or not b.retention_rule) and b.expired_at is not None and b.expired_at <= now
                and b.status == B.AVAILABLE
                and not b.used_by_image):
            out.append((b, f"manual backup kept until {fmt(b.expired_at)} as asked when it was made "
                           "(retention_duration_days); expired"))
    return out


def apply_retention(s: Session, ctx: ServiceContext, vault_id: str, resource_id: str, *, now: datetime | None = None,
                    source: str = "sweep") -> ResourceRetention | None:
    """Apply the vault's current retention to the backups of one resource in it (guide 5.2 Retention
    Rule, 5.7, 13.5.2; ``domain.retention.plan_retention`` decides) and delete what the plan prunes, each
    through a ``delete`` task that names the reason. When something is pruned, a ``retention`` task
    records the sweep in the operation logs. The backups are locked while planning, so two sweeps at once
    cannot both delete (the second sees them ``deleting``). Returns None when the vault is gone."""
    now = naive(now or ctx.now())
    vault = s.get(Vault, vault_id)
    if vault is None or vault.status == "deleting":
        return None
    current, policy = _current(s, vault_id)
    if current is None and vault.protect_type == "replication":
        current = _carried(s, vault_id, resource_id)
    plan, rows = _plan(s, vault_id, resource_id, current, now, lock=True)
    name = next((b.resource_name for b in rows.values()), "")
    out = ResourceRetention(vault_id, resource_id, name, policy.id if policy else None, plan,
                            {b.id: b.name for b in rows.values()})
    reasons: dict[str, str] = {}
    for v in plan.to_prune:
        reasons[v.backup.id] = v.explain()
    for b, why in expired_manual(rows.values(), now):
        reasons[b.id] = f"delete {b.id}: {why}"
    for bid, why in reasons.items():
        tid = queue_delete_for_system(s, ctx, rows[bid], ("retention: " + why)[:1000])
        if tid:
            out.deleted.append((bid, tid))
    if out.deleted:
        rtype = next((b.resource_type for b in rows.values()), "")
        deleted = [{"backup_id": bid, "backup_name": out.names[bid], "delete_task_id": tid,
                    "reason": reasons[bid]} for bid, tid in out.deleted]
        task = tasks.new_task(
            s, project_id=vault.project_id, operation_type="retention", now=now, vault_id=vault.id,
            vault_name=vault.name, resource_id=resource_id, resource_name=name, resource_type=rtype,
            provider_id=R.PROVIDER_ID.get(rtype, ""), policy_id=policy.id if policy else "",
            extra_info={"common": {"progress": 100},
                        "retention": {"source": source, "policy_id": policy.id if policy else None,
                                      "rule": current.rule.describe() if current else None,
                                      "deleted_count": len(deleted), "kept_count": len(plan.keep_ids),
                                      "deleted": deleted}})
        task.status, task.progress, task.started_at, task.ended_at = tasks.SUCCESS, 100, now, now
        out.task_id = task.id
    return out


def apply_retention_after_backup(ctx: ServiceContext, vault_id: str, resource_id: str) -> None:
    """Guide 13.5.2: "After a backup is generated, regardless of an automatic or a manual one, the system
    verifies and uses the latest retention rule." The backup task calls this after every successful
    backup (of a disk, a server or a file system: ``resource_id`` is the top-level resource). A failure
    here never fails the backup: it is logged and the next sweep applies the rule."""
    try:
        with ctx.tx() as s:
            apply_retention(s, ctx, vault_id, resource_id, source="after_backup")
    except Exception:  # noqa: BLE001 - retention must not turn a good backup into a failed task
        log.exception("retention after backup of %s in vault %s failed; the next sweep retries", resource_id,
                      vault_id)


#: (vault, resource) pairs one sweep pass looks at (``sweep_pass``); the scheduler runs passes until a
#: round is complete, one per tick.
SWEEP_PAIRS = 500
#: A pass also stops after the pair that took it past this many seconds (pairs with many deletions, a
#: slow catalog): the scheduler's thread is back to its ticks within about this time.
SWEEP_PASS_SECONDS = 10.0
#: The ``SweepCursor`` row of the retention sweep.
CURSOR = "retention"


@dataclass
class SweepPass:
    """One bounded pass of the retention sweep: what it pruned, how many pairs it looked at, where it
    stopped (the next pass starts after it) and whether it reached the end of the pairs (a round done)."""

    pruned: list[ResourceRetention] = field(default_factory=list)
    pairs: int = 0
    last: tuple[str, str] | None = None
    round_done: bool = False


def _pairs_after(s: Session, after: tuple[str, str] | None, limit: int) -> list[tuple[str, str]]:
    """The next ``limit`` (vault, resource) pairs with top-level backups, in order, after ``after``: a
    keyset walk of ``backup_usage``'s primary key (one row per pair and status), not of the backups."""
    q = select(BackupUsage.vault_id, BackupUsage.resource_id).distinct()
    if after is not None:
        v, r = after
        q = q.where(or_(BackupUsage.vault_id > v, and_(BackupUsage.vault_id == v, BackupUsage.resource_id > r)))
    q = q.order_by(BackupUsage.vault_id, BackupUsage.resource_id).limit(limit)
    return [(v, r) for v, r in s.execute(q)]


def _has_work(s: Session, vault_id: str, resource_id: str, vaults: dict, now: datetime) -> bool:
    """Whether ``apply_retention`` would delete something of this pair now: the same plan, made from the
    few columns it needs (no entities, no JSON, no lock). Only such pairs get a write transaction.
    ``vaults`` caches each vault's (status, protect type, current rule) for the pass."""
    if vault_id not in vaults:
        vault = s.get(Vault, vault_id)
        vaults[vault_id] = None if vault is None else (vault.status, vault.protect_type, _current(s, vault_id)[0])
    if vaults[vault_id] is None or vaults[vault_id][0] == "deleting":
        return False
    _, protect_type, current = vaults[vault_id]
    rows = list(s.execute(select(*_PLAN_COLUMNS).where(
        Backup.vault_id == vault_id, Backup.resource_id == resource_id, Backup.parent_id.is_(None))
        .order_by(Backup.created_at, Backup.id)))
    # The pairs the sweep has always covered: automatic backups, or manual ones with an expiry.
    if not any(b.auto_trigger or b.expired_at is not None for b in rows):
        return False
    if current is None and protect_type == "replication":
        current = _carried(s, vault_id, resource_id)
    plan = plan_retention([_record_of(b) for b in rows], current, aware(now))
    return bool(plan.to_prune) or bool(expired_manual(rows, now))


def sweep_cursor(ctx: ServiceContext) -> tuple[str, str] | None:
    """The pair the last pass stopped at (None: the next pass starts a round)."""
    with ctx.read() as s:
        row = s.get(SweepCursor, CURSOR)
        return (row.vault_id, row.resource_id) if row is not None and row.vault_id else None


def _save_cursor(ctx: ServiceContext, last: tuple[str, str] | None, now: datetime) -> None:
    with ctx.tx() as s:
        row = s.get(SweepCursor, CURSOR, with_for_update=True)
        if row is None:
            row = SweepCursor(name=CURSOR)
            s.add(row)
        row.vault_id, row.resource_id = last or ("", "")
        row.updated_at = now


def sweep_pass(ctx: ServiceContext, *, now: datetime | None = None, limit: int = SWEEP_PAIRS,
               seconds: float = SWEEP_PASS_SECONDS) -> SweepPass:
    """Guide 5.2 (Retention Rule notes: "The system automatically deletes the earliest and expired
    backups ...", in batches): retention for at most ``limit`` (vault, resource) pairs, after the pair the
    previous pass stopped at (the ``SweepCursor`` row, kept in the catalog: a restarted scheduler goes
    on where it was). After the last pair the next pass starts again from the first."""
    now = naive(now or ctx.now())
    out = sweep_pass_after(ctx, sweep_cursor(ctx), limit, now, seconds=seconds)
    _save_cursor(ctx, None if out.round_done else out.last, now)
    return out


def sweep_pass_after(ctx: ServiceContext, start: tuple[str, str] | None, limit: int, now: datetime, *,
                     seconds: float = SWEEP_PASS_SECONDS) -> SweepPass:
    """A pass over the ``limit`` pairs after ``start`` (None: from the first), the cursor untouched; it
    stops early after the pair that takes it past ``seconds`` (at least one pair is done).
    Pairs are checked in short read transactions (``_has_work``); only a pair with something to delete
    gets a write transaction of its own (``apply_retention``), so SQLite's one writer lock is released
    between pairs and the API is never held up for more than one pair's deletions."""
    out = SweepPass()
    with ctx.read() as s:
        pairs = _pairs_after(s, start, limit)
    vaults: dict = {}
    stop_at = time.monotonic() + seconds
    for vault_id, resource_id in pairs:
        if out.pairs and time.monotonic() >= stop_at:
            break
        out.pairs += 1
        out.last = (vault_id, resource_id)
        try:
            with ctx.read() as s:
                if not _has_work(s, vault_id, resource_id, vaults, now):
                    continue
            with ctx.tx() as s:
                r = apply_retention(s, ctx, vault_id, resource_id, now=now, source="sweep")
        except Exception:  # noqa: BLE001 - one bad vault must not stop the sweep
            log.exception("retention sweep of %s in vault %s failed", resource_id, vault_id)
            continue
        if r is not None and r.deleted:
            out.pruned.append(r)
    out.round_done = out.pairs == len(pairs) < limit
    out.last = out.last or start
    return out


def retention_sweep(ctx: ServiceContext, *, now: datetime | None = None,
                    limit: int = SWEEP_PAIRS) -> list[ResourceRetention]:
    """A whole round of the sweep at once, from the first pair to the last (``sweep_pass`` after
    ``sweep_pass``, each bounded; the scheduler's own cursor is left alone). Returns the plans that pruned
    something."""
    now = naive(now or ctx.now())
    out: list[ResourceRetention] = []
    after: tuple[str, str] | None = None
    while True:
        p = sweep_pass_after(ctx, after, limit, now)
        out += p.pruned
        if p.round_done:
            return out
        after = p.last


def retention_preview(s: Session, ctx: ServiceContext, p: Principal, policy_id: str, *,
                      vault_id: str | None = None, now: datetime | None = None) -> list[ResourceRetention]:
    """Dry run (beyond the guide, like ``restic forget --dry-run``): what the policy's retention would
    delete now, and why, for each resource with backups in ``vault_id`` (or in every vault the policy is
    applied to). Deletes nothing. A policy not applied to the vault is evaluated as if it were."""
    now = naive(now or ctx.now())
    policy = get_policy(s, p.project_id, policy_id)
    if policy.operation_type != P.BACKUP:
        raise InvalidParameter("retention is previewed for backup policies; replication policies keep replicas "
                               "in the destination region", code="BackupService.6305")
    current = spec_of(policy).current_retention()
    if vault_id:
        vault_ids = [get_vault(s, p.project_id, vault_id).id]
    else:
        vault_ids = [v for (v,) in s.execute(vaults_bound_to(policy.id))]
    out = []
    for vid in vault_ids:
        rids = [r for (r,) in s.execute(select(Backup.resource_id).distinct().where(
            Backup.vault_id == vid, Backup.parent_id.is_(None)).order_by(Backup.resource_id))]
        for rid in rids:
            plan, rows = _plan(s, vid, rid, current, now, lock=False)
            out.append(ResourceRetention(vid, rid, next((b.resource_name for b in rows.values()), ""), policy.id,
                                         plan, {b.id: b.name for b in rows.values()}))
    return out


def prune_now(s: Session, ctx: ServiceContext, p: Principal, policy_id: str, vault_id: str) -> list[ResourceRetention]:
    """Apply retention to a vault now instead of waiting for the next sweep (``cbr policy prune``). The
    policy must be the vault's backup policy: its rule is the one that applies there."""
    p.require_write()
    policy = get_policy(s, p.project_id, policy_id)
    vault = get_vault(s, p.project_id, vault_id)
    bound = s.scalar(select(PolicyBinding.id).where(PolicyBinding.policy_id == policy.id,
                                                    PolicyBinding.vault_id == vault.id))
    if bound is None or policy.operation_type != P.BACKUP:
        raise StateConflict(f"backup policy {policy_id} is not applied to vault {vault_id}; its retention rule "
                            "does not apply there (preview it with a dry run instead)", code="BackupService.6306")
    rids = [r for (r,) in s.execute(select(Backup.resource_id).distinct().where(
        Backup.vault_id == vault.id, Backup.parent_id.is_(None)).order_by(Backup.resource_id))]
    out = []
    for rid in rids:
        r = apply_retention(s, ctx, vault_id, rid, source="manual")
        if r is not None:
            out.append(r)
    return out
