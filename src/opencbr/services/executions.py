"""Policy executions (guide 5.2): what the scheduler (``opencbr.scheduler``) runs on every tick. For each
enabled policy applied to a vault: the due execution times, the fire/skip decision of
``domain.schedule.decide_due`` and, for a fired backup execution, one checkpoint made with
``backups.create_checkpoint``. Every decision is a ``PolicyExecution`` row whose unique key
``(policy_id, vault_id, execution_id)`` is inserted **in the same transaction** that queues the backup:
of two schedulers that see the same execution, the second one's insert fails and it fires nothing
(exactly once); the window a scheduler looks at starts at the newest execution row (or the trigger's
start, or the binding's creation), never at anything it remembers, so a restart neither fires a time
twice nor forgets one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, aliased

from opencbr.catalog.models import (
    Backup,
    BackupUsage,
    Policy,
    PolicyBinding,
    PolicyExecution,
    Project,
    ReplicationRecord,
    Task,
    Vault,
    VaultResource,
)
from opencbr.domain import backup as B
from opencbr.domain import policy as P
from opencbr.domain import resource as R
from opencbr.domain.errors import CBRError, InvalidParameter
from opencbr.domain.schedule import DEFAULT_START_WINDOW_MINUTES, DueDecision, Run, choose_backup_mode, decide_due
from opencbr.services import backups, tasks, vaults
from opencbr.services.context import ServiceContext
from opencbr.services.policies import get_policy, spec_of
from opencbr.services.principal import Principal
from opencbr.services.utc import aware, fmt, naive

log = logging.getLogger("opencbr.policies")

#: Execution decisions recorded in ``PolicyExecution.decision``.
FIRE, SKIP, FAIL = "fire", "skip", "fail"
#: A scheduler that was stopped longer than this records nothing about the executions it missed before
#: that (they are all outside any start window anyway, which is at most 8 hours).
LOOKBACK = timedelta(days=7)
#: Execution rows older than this are purged, except the newest of each policy and vault (the lower bound
#: of the next window).
EXECUTIONS_KEPT_DAYS = 30


# ------------------------------------------------------------------------------------ preview
@dataclass
class ExecutionPreview:
    policy: Policy
    spec: P.PolicySpec
    runs: list[Run]


def preview_executions(s: Session, ctx: ServiceContext, p: Principal, policy_id: str, *, count: int = 10,
                       after: datetime | None = None) -> ExecutionPreview:
    """The next ``count`` (1-100) execution times of a policy after now (beyond the guide;
    ``cbr policy preview --next``)."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100:
        raise InvalidParameter("next must be a whole number from 1 to 100")
    policy = get_policy(s, p.project_id, policy_id)
    spec = spec_of(policy)
    start = aware(after or ctx.now())
    runs = spec.schedule(aware(policy.trigger_start)).next_runs(start, count)
    return ExecutionPreview(policy, spec, runs)


# ================================================================================================ executions
@dataclass
class ExecutionOutcome:
    """One recorded decision about one execution time of a policy on a vault."""

    policy_id: str
    vault_id: str
    execution_id: str
    scheduled_at: datetime
    decision: str  # fire | skip | fail
    reason: str
    checkpoint_ids: list[str] = field(default_factory=list)
    task_ids: list[str] = field(default_factory=list)


@dataclass
class _BindingState:
    project_id: str
    account_id: str
    policy: Policy
    binding: PolicyBinding
    vault: Vault
    last_scheduled: datetime | None
    resource_ids: list[str]
    busy: set[str]


def due_bindings(s: Session, now: datetime) -> list[tuple[str, str]]:
    """The (policy id, vault id) a tick must look at now: those whose next execution time
    (``PolicyBinding.next_due_at``) has come, and those whose next time is not known yet. Every applied
    policy counts, enabled or not (a disabled policy's executions are recorded as skipped, so enabling it
    later does not resurrect them). One indexed query: bindings with nothing due cost the tick nothing,
    however many there are."""
    rows = s.execute(select(PolicyBinding.id, PolicyBinding.policy_id, PolicyBinding.vault_id).where(
        or_(PolicyBinding.next_due_at.is_(None), PolicyBinding.next_due_at <= naive(now))))
    return [(pid, vid) for _, pid, vid in sorted(rows)]


#: ``next_due_at`` of a binding whose schedule has no execution left.
NEVER = datetime(9999, 1, 1)


def remember_next_due(ctx: ServiceContext, policy_id: str, vault_id: str, now: datetime) -> datetime | None:
    """Store the binding's next execution time: the first one after the window a tick at ``now`` looked
    at (``due_window``), all read from the catalog again. A time not recorded yet (a busy catalog) is
    still inside that window, so the next tick looks again. The binding row is locked first: a policy
    update that resets the time (``policies.replace_spec``) either waits for this and overwrites it, or
    commits before and is read here."""
    with ctx.tx() as s:
        binding = s.scalar(select(PolicyBinding).where(PolicyBinding.policy_id == policy_id,
                                                       PolicyBinding.vault_id == vault_id).with_for_update())
        policy = s.get(Policy, policy_id)
        if binding is None or policy is None:
            return None
        last = s.scalar(select(func.max(PolicyExecution.scheduled_at)).where(
            PolicyExecution.policy_id == policy_id, PolicyExecution.vault_id == vault_id))
        since = _window_start(policy, binding, last, now)
        runs = spec_of(policy).schedule(aware(policy.trigger_start)).next_runs(since, 1)
        binding.next_due_at = naive(runs[0].scheduled_at) if runs else NEVER
        return binding.next_due_at


def _busy_resources(s: Session, vault_id: str) -> set[str]:
    """The resources of the vault with a backup running, from the per-status counts the database keeps
    (``backup_usage``, top-level backups only): not a scan of the vault's backups."""
    return {rid for (rid,) in s.execute(select(BackupUsage.resource_id).where(
        BackupUsage.vault_id == vault_id, BackupUsage.status == B.PROTECTING, BackupUsage.backup_count > 0))}


def _load_state(s: Session, policy_id: str, vault_id: str) -> _BindingState | None:
    binding = s.scalar(select(PolicyBinding).where(PolicyBinding.policy_id == policy_id,
                                                   PolicyBinding.vault_id == vault_id))
    if binding is None:
        return None
    policy = s.get(Policy, policy_id)
    vault = s.get(Vault, vault_id)
    project = s.get(Project, binding.project_id)
    if policy is None or vault is None or project is None:
        return None
    last = s.scalar(select(func.max(PolicyExecution.scheduled_at)).where(
        PolicyExecution.policy_id == policy_id, PolicyExecution.vault_id == vault_id))
    rids = [rid for (rid,) in s.execute(select(VaultResource.resource_id).where(VaultResource.vault_id == vault_id)
                                        .order_by(VaultResource.id))]
    return _BindingState(binding.project_id, project.account_id, policy, binding, vault, last, rids,
                         _busy_resources(s, vault_id))


def due_window(state: _BindingState, now: datetime) -> tuple[datetime, datetime]:
    """The window ``(since, now]`` of execution times to decide on: after the newest recorded execution,
    the trigger's start (its anchor) and the moment the policy was applied to the vault — all read from
    the catalog, so any scheduler process, restarted or not, computes the same window."""
    return _window_start(state.policy, state.binding, state.last_scheduled, now), aware(now)


def _window_start(policy: Policy, binding: PolicyBinding, last_scheduled: datetime | None, now: datetime) -> datetime:
    bounds = [aware(policy.trigger_start), aware(binding.created_at), aware(now) - LOOKBACK]
    if last_scheduled is not None:
        bounds.append(aware(last_scheduled))
    return max(bounds)


def run_due_executions(ctx: ServiceContext, policy_id: str, vault_id: str, *, now: datetime | None = None,
                       scheduler_id: str = "") -> list[ExecutionOutcome]:
    """Decide and record every due execution of one policy on one vault (``opencbr.scheduler`` calls it
    on each tick). Returns the decisions this call recorded; those another scheduler recorded first are
    left out."""
    now = naive(now or ctx.now())
    with ctx.tx() as s:
        state = _load_state(s, policy_id, vault_id)
        if state is None:
            return []
        for obj in (state.policy, state.binding, state.vault):
            s.expunge(obj)
    spec = spec_of(state.policy)
    since, until = due_window(state, now)
    due = spec.schedule(aware(state.policy.trigger_start)).due_runs(since, until)
    if not due:
        return []
    idle = [r for r in state.resource_ids if r not in state.busy]
    previous_running = spec.operation_type == P.BACKUP and bool(state.resource_ids) and not idle
    decisions = decide_due(due, until, enabled=state.policy.enabled,
                           start_window_minutes=spec.start_window_minutes, previous_running=previous_running)
    # Times missed while no scheduler ran (past their start window): each is recorded, but one task tells
    # the user about all of them, not one task per hour of an outage.
    window = timedelta(minutes=spec.start_window_minutes or DEFAULT_START_WINDOW_MINUTES)
    missed = [d for d in decisions if not d.fire and d.run.scheduled_at + window < until]
    out = []
    for d in decisions:
        try:
            if d.fire and spec.operation_type == P.BACKUP:
                o = _fire_backup(ctx, state, spec, d, now, scheduler_id)
            elif d.fire:
                o = _fire_replication(ctx, state, d, now, scheduler_id)
            else:
                task = None if not state.policy.enabled else (spec.operation_type, tasks.SKIPPED, "BackupService.6951")
                message = d.reason
                if missed and d in missed and task is not None:
                    if d is not missed[-1]:
                        task = None
                    elif len(missed) > 1:
                        message = (f"{len(missed)} execution times, from {fmt(missed[0].run.scheduled_at)} to "
                                   f"{fmt(d.run.scheduled_at)}, passed more than {int(window.total_seconds() // 60)} "
                                   "minutes (their start window) while the scheduler was not running; they are "
                                   "skipped.")
                o = _record(ctx, state, d, now, scheduler_id, SKIP, d.reason, task=task, message=message)
        except IntegrityError:
            # Another scheduler recorded this execution first (unique key), or the policy was deleted
            # meanwhile (foreign key): nothing to do here.
            log.debug("execution %s of policy %s on vault %s already handled", d.run.execution_id, policy_id,
                      vault_id)
            o = None
        except OperationalError as e:
            # The catalog was busy (lock timeout, deadlock victim): nothing was recorded, so the next tick
            # sees this execution again while it is in its start window.
            log.warning("execution %s of policy %s on vault %s not decided now (%s); retried next tick",
                        d.run.execution_id, policy_id, vault_id, str(e).splitlines()[0])
            o = None
        if o is not None:
            out.append(o)
    return out


def _execution_row(state: _BindingState, run: Run, now: datetime, scheduler_id: str, decision: str,
                   reason: str) -> PolicyExecution:
    return PolicyExecution(project_id=state.project_id, policy_id=state.policy.id, vault_id=state.vault.id,
                           execution_id=run.execution_id, scheduled_at=naive(run.scheduled_at), fired_at=now,
                           decision=decision, reason=reason, scheduler_id=scheduler_id[:64])


def _finished_task(s: Session, state: _BindingState, run: Run, now: datetime, operation_type: str, status: str,
                   code: str, message: str, extra: dict | None = None) -> Task:
    """A task that is decided already (a skipped or failed policy execution): never claimed by a worker,
    shown in the operation logs with its cause (guide ch. 9)."""
    vault = state.vault
    provider = R.PROVIDER_ID.get(R.RESOURCE_TYPE_OF.get(vault.object_type, ""), "")
    info = {"policy": {"policy_id": state.policy.id, "policy_name": state.policy.name,
                       "execution_id": run.execution_id, "scheduled_at": run.scheduled_at.strftime("%Y-%m-%dT%H:%M:%SZ")},
            **(extra or {})}
    task = tasks.new_task(s, project_id=state.project_id, operation_type=operation_type, now=now, vault_id=vault.id,
                          vault_name=vault.name, policy_id=state.policy.id, provider_id=provider,
                          request_id=run.execution_id, extra_info=info)
    task.status, task.started_at, task.ended_at, task.updated_at = status, now, now, now
    task.error_code, task.error_message = code, message
    if status == tasks.SUCCESS:
        task.progress = 100
        task.extra_info = {**info, "common": {"progress": 100}}
    return task


def _record(ctx: ServiceContext, state: _BindingState, d: DueDecision, now: datetime, scheduler_id: str,
            decision: str, reason: str, *, task: tuple[str, str, str] | None,
            message: str | None = None) -> ExecutionOutcome:
    with ctx.tx() as s:
        row = _execution_row(state, d.run, now, scheduler_id, decision, reason)
        s.add(row)
        s.flush()  # the unique key: fails here if another scheduler recorded this execution
        task_ids = []
        if task is not None:
            op, status, code = task
            extra = {}
            if op == "replication":
                extra = {"replication": {"destination_vault_id": state.binding.destination_vault_id,
                                         "destination_project_id": state.binding.destination_project_id,
                                         "destination_region": (state.policy.spec.get("operation_definition") or {})
                                         .get("destination_region", "")}}
            task_ids.append(_finished_task(s, state, d.run, now, op, status, code, message or reason, extra).id)
    return ExecutionOutcome(state.policy.id, state.vault.id, d.run.execution_id, d.run.scheduled_at, decision, reason,
                            task_ids=task_ids)


def _system_principal(state: _BindingState, run: Run) -> Principal:
    """Automatic backups are made on the project's behalf by the scheduler."""
    return Principal(account_id=state.account_id, project_id=state.project_id, user_id="", user_name="scheduler",
                     role="member", request_id=run.execution_id)


def _modes(s: Session, vault_id: str, resource_ids: list[str], spec: P.PolicySpec, now: datetime) -> dict[str, bool]:
    """Full (True) or incremental for each resource's next automatic backup (``choose_backup_mode``:
    guide 5.2, the first backup is full and two full backups are at least a day apart;
    ``full_backup_interval``)."""
    return {rid: _next_is_full(s, vault_id, rid, spec, now) for rid in resource_ids}


def _next_is_full(s: Session, vault_id: str, resource_id: str, spec: P.PolicySpec, now: datetime) -> bool:
    """Reads the newest backups only as far as the rule can look: one when the policy never forces a full
    backup, ``full_backup_interval`` + 1 otherwise (and then the newest full one, if older): not the
    resource's whole history."""
    interval = -1 if spec.full_backup_interval is None else spec.full_backup_interval
    available = (Backup.vault_id == vault_id, Backup.resource_id == resource_id, Backup.parent_id.is_(None),
                 Backup.status == B.AVAILABLE)
    rows = list(s.execute(select(Backup.created_at, Backup.incremental).where(*available)
                          .order_by(Backup.created_at.desc()).limit(max(interval, 0) + 1)))
    last_full, since_full = None, 0
    for created, incremental in rows:
        if not incremental:
            last_full = aware(created)
            break
        since_full += 1
    if last_full is None and interval >= 0 and len(rows) > interval:
        newest_full = s.scalar(select(func.max(Backup.created_at)).where(*available, Backup.incremental.is_(False)))
        last_full = aware(newest_full) if newest_full is not None else None
    mode = choose_backup_mode(now=aware(now), has_previous_backup=bool(rows), last_full_at=last_full,
                              incrementals_since_full=since_full, full_backup_interval=spec.full_backup_interval)
    return mode.full


def _fire_replication(ctx: ServiceContext, state: _BindingState, d: DueDecision, now: datetime,
                      scheduler_id: str) -> ExecutionOutcome:
    """Fire one replication execution (guide 5.3): the vault's Available backups not replicated to the
    destination region yet (failed ones again; each at most once automatically), one task each
    (services/replication.py). A destination that cannot be used is a failed execution with the reason."""
    from opencbr.services import replication

    run = d.run
    region = (state.policy.spec.get("operation_definition") or {}).get("destination_region", "")
    target = {"vault_id": state.vault.id, "destination_project_id": state.binding.destination_project_id,
              "destination_region": region, "destination_vault_id": state.binding.destination_vault_id,
              "auto_trigger": True}
    try:
        with ctx.tx() as s:
            row = _execution_row(state, run, now, scheduler_id, FIRE, "Due.")
            s.add(row)
            s.flush()  # the unique key: a second scheduler stops here
            out = replication.copy_checkpoint(s, ctx, _system_principal(state, run), target,
                                              policy_id=state.policy.id)
            ids = [t.task_id for t in s.scalars(select(ReplicationRecord).where(ReplicationRecord.id.in_(
                [b["replication_record_id"] for b in out["backups"]])))]
            if not ids:
                row.reason = "Due. Every backup of the vault is replicated to the destination region already."
            return ExecutionOutcome(state.policy.id, state.vault.id, run.execution_id, run.scheduled_at, FIRE,
                                    row.reason, task_ids=ids)
    except CBRError as e:
        return _record(ctx, state, d, now, scheduler_id, FAIL, e.message,
                       task=("replication", tasks.FAILED, e.code))


def _fire_backup(ctx: ServiceContext, state: _BindingState, spec: P.PolicySpec, d: DueDecision, now: datetime,
                 scheduler_id: str) -> ExecutionOutcome | None:
    """Fire one backup execution: the execution row and the backups it queues commit together."""
    run = d.run
    with ctx.tx() as s:
        row = _execution_row(state, run, now, scheduler_id, FIRE, "Due.")
        s.add(row)
        s.flush()  # the unique key: a second scheduler stops here
        vault = s.get(Vault, state.vault.id)
        if vault is None or vault.status == "deleting":
            row.decision, row.reason = SKIP, "The vault is being deleted."
            return ExecutionOutcome(state.policy.id, state.vault.id, run.execution_id, run.scheduled_at, SKIP,
                                    row.reason)
        auto_added = vaults.associate_matching(s, ctx, vault)
        rids = [rid for (rid,) in s.execute(select(VaultResource.resource_id)
                                            .where(VaultResource.vault_id == vault.id, VaultResource.auto_protect)
                                            .order_by(VaultResource.id))]
        if auto_added:
            row.reason = "Due. Associated automatically (bind rules): " + ", ".join(auto_added) + "."
        if not rids:
            row.decision, row.reason = SKIP, "The vault has no resources to back up."
            return ExecutionOutcome(state.policy.id, state.vault.id, run.execution_id, run.scheduled_at, SKIP,
                                    row.reason)
        busy = _busy_resources(s, vault.id)
        idle = [r for r in rids if r not in busy]
        if not idle:
            row.decision = SKIP
            row.reason = ("The backup of the previous execution time is still running; this execution time is "
                          "skipped (guide 5.2).")
            t = _finished_task(s, state, run, now, "backup", tasks.SKIPPED, "BackupService.6951", row.reason)
            return ExecutionOutcome(state.policy.id, state.vault.id, run.execution_id, run.scheduled_at, SKIP,
                                    row.reason, task_ids=[t.id])
        modes = _modes(s, vault.id, idle, spec, now)
        groups = [(full, [r for r in idle if modes[r] == full]) for full in (False, True)]
        principal = _system_principal(state, run)
        views = []
        try:
            with s.begin_nested():
                for full, group in groups:
                    if group:
                        views.append(backups.create_checkpoint(
                            s, ctx, principal, vault.id, {"resources": group, "incremental": not full},
                            auto_trigger=True, policy_id=state.policy.id, retention_rule=spec.retention.encode(),
                            now=now))
        except CBRError as e:
            if e.code == "BackupService.6422":  # a backup started meanwhile (e.g. a manual one): guide 5.2
                row.decision = SKIP
                row.reason = (f"{e.message}; this execution time is skipped (guide 5.2).")
                t = _finished_task(s, state, run, now, "backup", tasks.SKIPPED, "BackupService.6951", row.reason)
                return ExecutionOutcome(state.policy.id, state.vault.id, run.execution_id, run.scheduled_at, SKIP,
                                        row.reason, task_ids=[t.id])
            # Guide 13.5.6 (vault full: "auto backup will fail"), a resource in error...: the execution
            # failed; the task says why in words.
            row.decision, row.reason = FAIL, e.message
            t = _finished_task(s, state, run, now, "backup", tasks.FAILED, e.code, e.message)
            return ExecutionOutcome(state.policy.id, state.vault.id, run.execution_id, run.scheduled_at, FAIL,
                                    e.message, task_ids=[t.id])
        if busy:
            row.reason = ("Due. Skipped for " + ", ".join(sorted(busy & set(rids))) +
                          ": the backup of the previous execution time is still running (guide 5.2).")
        row.checkpoint_id = views[0].checkpoint.id
        return ExecutionOutcome(state.policy.id, state.vault.id, run.execution_id, run.scheduled_at, FIRE, row.reason,
                                checkpoint_ids=[v.checkpoint.id for v in views],
                                task_ids=[t for v in views for t in v.task_ids])


def purge_executions(s: Session, ctx: ServiceContext, *, days: int = EXECUTIONS_KEPT_DAYS) -> int:
    """Execution rows older than ``days``, except the newest one of each policy still applied to a vault
    (it bounds the next window; a policy applied again starts after its new binding anyway). Returns how
    many were deleted."""
    cutoff = ctx.now() - timedelta(days=days)
    newer = aliased(PolicyExecution)
    has_newer = (select(newer.id).where(newer.policy_id == PolicyExecution.policy_id,
                                        newer.vault_id == PolicyExecution.vault_id,
                                        newer.scheduled_at > PolicyExecution.scheduled_at).exists())
    bound = (select(PolicyBinding.id).where(PolicyBinding.policy_id == PolicyExecution.policy_id,
                                            PolicyBinding.vault_id == PolicyExecution.vault_id).exists())
    res = s.execute(delete(PolicyExecution).where(PolicyExecution.scheduled_at < cutoff, or_(has_newer, ~bound))
                    .execution_options(synchronize_session=False))
    return res.rowcount or 0


def list_executions(s: Session, p: Principal, policy_id: str, *, vault_id: str | None = None,
                    limit: int = 100) -> list[PolicyExecution]:
    """The recorded decisions of a policy, newest first (what ran, what was skipped and why)."""
    get_policy(s, p.project_id, policy_id)
    q = select(PolicyExecution).where(PolicyExecution.policy_id == policy_id)
    if vault_id:
        q = q.where(PolicyExecution.vault_id == vault_id)
    return list(s.scalars(q.order_by(PolicyExecution.scheduled_at.desc(), PolicyExecution.id.desc()).limit(limit)))


