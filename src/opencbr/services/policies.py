"""Policies (guide chapter 5; rules in ``opencbr.domain.policy``, ``domain.schedule`` and
``domain.retention``): create, list, show, update and delete policies; apply them to vaults and remove
them; fire their due executions exactly once; apply retention after every backup and in sweeps.

Sections:

* **Policies** — the CBR v3 policy routes (CBR v3 API 6.4) and associate / dissociate (6.1).
* **Executions** — what the scheduler (``opencbr.scheduler``) runs on every tick: for each enabled policy
  applied to a vault, the due execution times, the fire/skip decision of ``domain.schedule.decide_due``
  and, for a fired backup execution, one checkpoint made with ``backups.create_checkpoint``. Every
  decision is a ``PolicyExecution`` row whose unique key ``(policy_id, vault_id, execution_id)`` is
  inserted **in the same transaction** that queues the backup: of two schedulers that see the same
  execution, the second one's insert fails and it fires nothing (exactly once); the window a scheduler
  looks at starts at the newest execution row (or the trigger's start, or the binding's creation), never
  at anything it remembers, so a restart neither fires a time twice nor forgets one.
* **Retention** — ``apply_retention`` plans with ``domain.retention.plan_retention`` over the top-level
  backups of one resource in one vault and deletes what the plan prunes through
  ``backups.queue_delete_for_system``, recording a ``retention`` task. The backup task calls
  :func:`apply_retention_after_backup` after every successful backup (guide 13.5.2) and the scheduler
  sweeps every vault periodically (guide 5.2, Retention Rule notes).
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from sqlalchemy import delete, func, or_, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, aliased

from opencbr.catalog.models import (
    Backup,
    Policy,
    PolicyBinding,
    PolicyExecution,
    Project,
    Task,
    Vault,
    VaultResource,
)
from opencbr.domain import backup as B
from opencbr.domain import policy as P
from opencbr.domain import resource as R
from opencbr.domain.errors import CBRError, InvalidParameter, NotFound, StateConflict
from opencbr.domain.retention import BackupRecord, CurrentRetention, RetentionPlan, RetentionRule, plan_retention
from opencbr.domain.schedule import DEFAULT_START_WINDOW_MINUTES, DueDecision, Run, choose_backup_mode, decide_due
from opencbr.services import tasks
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

log = logging.getLogger("opencbr.policies")
UTC = timezone.utc

#: Execution decisions recorded in ``PolicyExecution.decision``.
FIRE, SKIP, FAIL = "fire", "skip", "fail"
#: A scheduler that was stopped longer than this records nothing about the executions it missed before
#: that (they are all outside any start window anyway, which is at most 8 hours).
LOOKBACK = timedelta(days=7)
#: Execution rows older than this are purged, except the newest of each policy and vault (the lower bound
#: of the next window).
EXECUTIONS_KEPT_DAYS = 30
REPLICATION_UNAVAILABLE = (
    "Replication is not available yet in this version of OpenCBR: the backups of this vault were not "
    "replicated. The policy is kept and will replicate once replication is supported."
)


def _aware(dt: datetime) -> datetime:
    """Catalog times are naive UTC; the domain wants aware ones."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _fmt(dt: datetime) -> str:
    return _aware(dt).strftime("%Y-%m-%d %H:%M UTC")


def _naive(dt: datetime) -> datetime:
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo is not None else dt


# ================================================================================================ lookups
def get_policy(s: Session, project_id: str, policy_id: str, *, for_update: bool = False) -> Policy:
    pol = s.get(Policy, policy_id, with_for_update=for_update) if isinstance(policy_id, str) else None
    if pol is None or pol.project_id != project_id:
        raise NotFound(f"policy {policy_id} not found", code="BackupService.6301")
    return pol


def bound_policy_ids(s: Session, vault_id: str) -> list[str]:
    return bound_policy_ids_of(s, [vault_id]).get(vault_id, [])


def bound_policy_ids_of(s: Session, vault_ids: list[str]) -> dict[str, list[str]]:
    """The policies applied to each of the vaults, in one query."""
    out: dict[str, list[str]] = {}
    for vid, pid in s.execute(select(PolicyBinding.vault_id, PolicyBinding.policy_id)
                              .where(PolicyBinding.vault_id.in_(vault_ids)).order_by(PolicyBinding.operation_type)):
        out.setdefault(vid, []).append(pid)
    return out


def vaults_bound_to(policy_id: str):
    """The ids of the vaults a policy is applied to, as a subquery (list_vault's ``policy_id`` filter)."""
    return select(PolicyBinding.vault_id).where(PolicyBinding.policy_id == policy_id)


def spec_of(policy: Policy) -> P.PolicySpec:
    """The normalised spec of a stored policy (its ``spec`` column is the document ``to_document`` made)."""
    return P.validate_policy_create(policy.spec)


# ================================================================================================ policies
@dataclass
class PolicyView:
    policy: Policy
    spec: P.PolicySpec
    bindings: list[PolicyBinding] = field(default_factory=list)


def _view(s: Session, policy: Policy) -> PolicyView:
    bindings = list(s.scalars(select(PolicyBinding).where(PolicyBinding.policy_id == policy.id)
                              .order_by(PolicyBinding.created_at, PolicyBinding.id)))
    return PolicyView(policy, spec_of(policy), bindings)


def _count(s: Session, project_id: str, operation_type: str) -> int:
    return s.scalar(select(func.count()).select_from(Policy).where(
        Policy.project_id == project_id, Policy.operation_type == operation_type)) or 0


def create_policy(ctx: ServiceContext, p: Principal, body: object) -> PolicyView:
    """Guide 5.2 / 5.3: create a backup or replication policy. Every field rule is
    ``domain.policy.validate_policy_create``; guide 1.6 (at most 32 of each type) is ``check_policy_count``,
    checked under a lock on the project so two concurrent creations cannot both take the 32nd place."""
    p.require_write()
    spec = P.validate_policy_create(body, current_region=ctx.settings.region)
    now = ctx.now()
    with ctx.tx() as s:
        s.get(Project, p.project_id, with_for_update=True)  # serialises creations in the project (PostgreSQL)
        P.check_policy_count(spec.operation_type, _count(s, p.project_id, spec.operation_type))
        policy = Policy(project_id=p.project_id, name=spec.name, operation_type=spec.operation_type,
                        enabled=spec.enabled, spec=spec.to_document(), trigger_start=now, created_at=now, updated_at=now)
        s.add(policy)
        s.flush()
        return PolicyView(policy, spec, [])


def list_policies(ctx: ServiceContext, p: Principal, *, operation_type: str | None = None,
                  vault_id: str | None = None) -> list[PolicyView]:
    """Policies of the project, oldest first; ``operation_type`` backup / replication, ``vault_id`` the
    policies applied to that vault (guide 5.1)."""
    if operation_type and operation_type not in P.OPERATION_TYPES:
        raise InvalidParameter('operation_type must be "backup" or "replication"')
    q = select(Policy).where(Policy.project_id == p.project_id)
    if operation_type:
        q = q.where(Policy.operation_type == operation_type)
    if vault_id:
        q = q.where(Policy.id.in_(select(PolicyBinding.policy_id).where(PolicyBinding.vault_id == vault_id,
                                                                       PolicyBinding.project_id == p.project_id)))
    with ctx.read() as s:
        return [_view(s, pol) for pol in s.scalars(q.order_by(Policy.created_at, Policy.id))]


def show_policy(ctx: ServiceContext, p: Principal, policy_id: str) -> PolicyView:
    with ctx.read() as s:
        return _view(s, get_policy(s, p.project_id, policy_id))


def update_policy(ctx: ServiceContext, p: Principal, policy_id: str, body: object) -> PolicyView:
    """Guide 5.4: change a policy. The merge and its rules are ``domain.policy.apply_policy_update``. When
    the execution times change, the trigger restarts now (its start time is the new schedule's anchor: a
    day-based cycle counts from the day of the change, guide 5.2). A new retention rule applies from the
    next backup or sweep on, with the semantics of guide 13.5.2 (``domain.retention``)."""
    p.require_write()
    now = ctx.now()
    with ctx.tx() as s:
        policy = get_policy(s, p.project_id, policy_id, for_update=True)
        old = spec_of(policy)
        new = P.apply_policy_update(old, body, current_region=ctx.settings.region)
        if not new.same_trigger(old):
            policy.trigger_start = now
        policy.name, policy.enabled, policy.spec = new.name, new.enabled, new.to_document()
        policy.updated_at = now
        s.flush()
        return _view(s, policy)


def delete_policy(ctx: ServiceContext, p: Principal, policy_id: str) -> PolicyView:
    """Guide 5.5: delete a policy. It is removed from every vault it was applied to; no backup is deleted
    ("Deleting a policy will not delete the backups or replicas generated based on the policy")."""
    p.require_write()
    with ctx.tx() as s:
        policy = get_policy(s, p.project_id, policy_id, for_update=True)
        view = _view(s, policy)
        s.execute(delete(PolicyBinding).where(PolicyBinding.policy_id == policy.id))
        s.execute(delete(PolicyExecution).where(PolicyExecution.policy_id == policy.id))
        s.delete(policy)
        return view


# ------------------------------------------------------------------------------------ vault bindings
def bind(s: Session, p: Principal, vault: Vault, policy: Policy, destination_vault_id: str = "",
         destination_project_id: str = "", *, now: datetime | None = None) -> PolicyBinding:
    """Guide 5.6 and 1.6: apply a policy to a vault; one backup and one replication policy per vault;
    which vaults take which policies is ``domain.policy.check_vault_binding``. ``now`` (the service
    clock; default the vault's last change) is when the binding starts: no execution before it fires."""
    others = [op for (op,) in s.execute(select(PolicyBinding.operation_type).where(
        PolicyBinding.vault_id == vault.id, PolicyBinding.policy_id != policy.id))]
    P.check_vault_binding(policy.operation_type, vault.object_type, vault.protect_type, others)
    existing = s.scalar(select(PolicyBinding).where(PolicyBinding.vault_id == vault.id,
                                                    PolicyBinding.policy_id == policy.id))
    if existing is not None:
        return existing
    binding = PolicyBinding(project_id=p.project_id, vault_id=vault.id, policy_id=policy.id,
                            operation_type=policy.operation_type, destination_vault_id=destination_vault_id,
                            destination_project_id=destination_project_id,
                            created_at=now or vault.updated_at or vault.created_at)
    s.add(binding)
    s.flush()
    return binding


def bind_at_creation(s: Session, p: Principal, vault: Vault, policy_id: str) -> PolicyBinding:
    """VaultCreate.backup_policy_id: apply a backup policy as the vault is created (guide 2.2.1 step 7)."""
    policy = get_policy(s, p.project_id, policy_id)
    if policy.operation_type != P.BACKUP:
        raise InvalidParameter("backup_policy_id must name a backup policy", code="BackupService.6304")
    return bind(s, p, vault, policy)


def _replication_destination(s: Session, policy: Policy, vault: Vault, destination_vault_id: object) -> str:
    """CBR v3 API 6.1: a replication policy is applied with the ``destination_vault_id`` its replicas go
    to (required); a backup policy has none. When the destination vault is in this installation's catalog
    (in the policy's destination project) it is checked with
    ``domain.policy.check_replication_destination`` (a replication vault of the same kind, in the
    policy's destination region); any other id names a vault this installation cannot see (another region)
    and is taken as given (replication itself comes later)."""
    if policy.operation_type != P.REPLICATION:
        if destination_vault_id:
            raise InvalidParameter("destination_vault_id applies only to replication policies; this is a backup "
                                   "policy", code="BackupService.6303")
        return ""
    if not destination_vault_id or not isinstance(destination_vault_id, str):
        raise InvalidParameter("applying a replication policy needs destination_vault_id, the vault in the "
                               "destination region that receives the replicas (guide 5.3)",
                               code="BackupService.6303")
    if len(destination_vault_id) > 36:
        raise InvalidParameter("destination_vault_id must be a vault id (at most 36 characters)",
                               code="BackupService.6303")
    spec = spec_of(policy)
    dest = s.get(Vault, destination_vault_id)
    if dest is not None and dest.project_id == spec.destination_project_id:
        P.check_replication_destination(spec, vault.object_type, dest.object_type, dest.protect_type, dest.region)
    return destination_vault_id


def associate(ctx: ServiceContext, p: Principal, vault_id: str, policy_id: object,
              destination_vault_id: object = None, add_policy_ids: object = None) -> list[PolicyBinding]:
    """Guide 5.6: apply a policy (and the ``add_policy_ids``) to a vault. Rules: the policy and the vault
    exist in the project; ``domain.policy.check_vault_binding`` (one backup and one replication policy per
    vault — 409 —, backup policies on backup vaults, replication policies only on server and SFS Turbo
    backup vaults); a replication policy needs its destination vault. Re-applying a policy already
    applied is a no-op. Returns the bindings, the one of ``policy_id`` first."""
    p.require_write()
    ids: list[str] = []
    if policy_id is not None:
        ids.append(policy_id)  # type: ignore[arg-type]
    if add_policy_ids:
        if not isinstance(add_policy_ids, list):
            raise InvalidParameter("add_policy_ids must be a list of policy ids")
        ids.extend(add_policy_ids)
    if not ids:
        raise InvalidParameter("policy_id is required: the policy to apply to the vault")
    if not all(isinstance(i, str) and i for i in ids):
        raise InvalidParameter("policy ids must be non-empty strings")
    from opencbr.services.vaults import get_vault

    with ctx.tx() as s:
        vault = get_vault(s, p.project_id, vault_id, for_update=True)
        if vault.status == "deleting":
            raise StateConflict(f"vault {vault_id} is being deleted", code="BackupService.6211")
        now = ctx.now()
        out = []
        for pid in dict.fromkeys(ids):
            policy = get_policy(s, p.project_id, pid)
            dest = _replication_destination(s, policy, vault, destination_vault_id if pid == ids[0] else None)
            dest_project = spec_of(policy).destination_project_id or "" if dest else ""
            out.append(bind(s, p, vault, policy, dest, dest_project, now=now))
        vault.updated_at = now
        return out


def dissociate(ctx: ServiceContext, p: Principal, vault_id: str, policy_id: object) -> PolicyBinding:
    """Guide 5.7: remove a policy from a vault. No backup is deleted; backups kept by a time period still
    expire by the rule they were made under, backups kept by quantity are kept (``domain.retention``). A
    backup already running finishes."""
    p.require_write()
    if not isinstance(policy_id, str) or not policy_id:
        raise InvalidParameter("policy_id is required: the policy to remove from the vault")
    from opencbr.services.vaults import get_vault

    with ctx.tx() as s:
        vault = get_vault(s, p.project_id, vault_id, for_update=True)
        get_policy(s, p.project_id, policy_id)
        binding = s.scalar(select(PolicyBinding).where(PolicyBinding.vault_id == vault.id,
                                                       PolicyBinding.policy_id == policy_id))
        if binding is None:
            raise NotFound(f"policy {policy_id} is not applied to vault {vault_id}", code="BackupService.6302")
        s.delete(binding)
        vault.updated_at = ctx.now()
        return binding


# ------------------------------------------------------------------------------------ preview
@dataclass
class ExecutionPreview:
    policy: Policy
    spec: P.PolicySpec
    runs: list[Run]


def preview_executions(ctx: ServiceContext, p: Principal, policy_id: str, count: int = 10,
                       after: datetime | None = None) -> ExecutionPreview:
    """The next ``count`` (1-100) execution times of a policy after now (beyond the guide;
    ``cbr policy preview --next``)."""
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 100:
        raise InvalidParameter("next must be a whole number from 1 to 100")
    with ctx.tx() as s:
        policy = get_policy(s, p.project_id, policy_id)
        spec = spec_of(policy)
    start = _aware(after or ctx.now())
    runs = spec.schedule(_aware(policy.trigger_start)).next_runs(start, count)
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


def scheduled_bindings(ctx: ServiceContext) -> list[tuple[str, str]]:
    """Every (policy id, vault id) a scheduler must look at: all applied policies, enabled or not (a
    disabled policy's executions are recorded as skipped, so enabling it later does not resurrect them)."""
    with ctx.tx() as s:
        return [(pid, vid) for pid, vid in s.execute(
            select(PolicyBinding.policy_id, PolicyBinding.vault_id).order_by(PolicyBinding.id))]


def _busy_resources(s: Session, vault_id: str) -> set[str]:
    return {rid for (rid,) in s.execute(select(Backup.resource_id).where(
        Backup.vault_id == vault_id, Backup.parent_id.is_(None), Backup.status == B.PROTECTING))}


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
    bounds = [_aware(state.policy.trigger_start), _aware(state.binding.created_at), _aware(now) - LOOKBACK]
    if state.last_scheduled is not None:
        bounds.append(_aware(state.last_scheduled))
    return max(bounds), _aware(now)


def run_due_executions(ctx: ServiceContext, policy_id: str, vault_id: str, *, now: datetime | None = None,
                       scheduler_id: str = "") -> list[ExecutionOutcome]:
    """Decide and record every due execution of one policy on one vault (``opencbr.scheduler`` calls it
    on each tick). Returns the decisions this call recorded; those another scheduler recorded first are
    left out."""
    now = _naive(now or ctx.now())
    with ctx.tx() as s:
        state = _load_state(s, policy_id, vault_id)
        if state is None:
            return []
        for obj in (state.policy, state.binding, state.vault):
            s.expunge(obj)
    spec = spec_of(state.policy)
    since, until = due_window(state, now)
    due = spec.schedule(_aware(state.policy.trigger_start)).due_runs(since, until)
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
                o = _record(ctx, state, d, now, scheduler_id, FAIL, REPLICATION_UNAVAILABLE,
                            task=("replication", tasks.FAILED, "BackupService.6950"))
            else:
                task = None if not state.policy.enabled else (spec.operation_type, tasks.SKIPPED, "BackupService.6951")
                message = d.reason
                if missed and d in missed and task is not None:
                    if d is not missed[-1]:
                        task = None
                    elif len(missed) > 1:
                        message = (f"{len(missed)} execution times, from {_fmt(missed[0].run.scheduled_at)} to "
                                   f"{_fmt(d.run.scheduled_at)}, passed more than {int(window.total_seconds() // 60)} "
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
                           execution_id=run.execution_id, scheduled_at=_naive(run.scheduled_at), fired_at=now,
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


@dataclass
class _JoinedContext(ServiceContext):
    """A context whose unit of work is an already open session: services called with it write into the
    caller's transaction (which commits or rolls back everything together)."""

    session: Session | None = None

    def tx(self):
        return nullcontext(self.session)

    def read(self):
        return nullcontext(self.session)


def _joined(ctx: ServiceContext, s: Session) -> ServiceContext:
    return _JoinedContext(settings=ctx.settings, engine=ctx.engine, sessions=ctx.sessions, clock=ctx.clock,
                          _master_key=ctx._master_key, _store=ctx._store, session=s)


def _system_principal(state: _BindingState, run: Run) -> Principal:
    """Automatic backups are made on the project's behalf by the scheduler."""
    return Principal(account_id=state.account_id, project_id=state.project_id, user_id="", user_name="scheduler",
                     role="member", request_id=run.execution_id)


def _modes(s: Session, vault_id: str, resource_ids: list[str], spec: P.PolicySpec, now: datetime) -> dict[str, bool]:
    """Full (True) or incremental for each resource's next automatic backup (``choose_backup_mode``:
    guide 5.2, the first backup is full and two full backups are at least a day apart;
    ``full_backup_interval``)."""
    out = {}
    for rid in resource_ids:
        rows = list(s.execute(select(Backup.created_at, Backup.incremental).where(
            Backup.vault_id == vault_id, Backup.resource_id == rid, Backup.parent_id.is_(None),
            Backup.status == B.AVAILABLE).order_by(Backup.created_at.desc())))
        last_full, since_full = None, 0
        for created, incremental in rows:
            if not incremental:
                last_full = _aware(created)
                break
            since_full += 1
        mode = choose_backup_mode(now=_aware(now), has_previous_backup=bool(rows), last_full_at=last_full,
                                  incrementals_since_full=since_full, full_backup_interval=spec.full_backup_interval)
        out[rid] = mode.full
    return out


def _fire_backup(ctx: ServiceContext, state: _BindingState, spec: P.PolicySpec, d: DueDecision, now: datetime,
                 scheduler_id: str) -> ExecutionOutcome | None:
    """Fire one backup execution: the execution row and the backups it queues commit together."""
    from opencbr.services import backups

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
        rids = [rid for (rid,) in s.execute(select(VaultResource.resource_id)
                                            .where(VaultResource.vault_id == vault.id).order_by(VaultResource.id))]
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
        joined = _joined(ctx, s)
        views = []
        try:
            with s.begin_nested():
                for full, group in groups:
                    if group:
                        views.append(backups.create_checkpoint(
                            joined, principal, vault.id, {"resources": group, "incremental": not full},
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


def purge_executions(ctx: ServiceContext, days: int = EXECUTIONS_KEPT_DAYS) -> int:
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
    with ctx.tx() as s:
        res = s.execute(delete(PolicyExecution).where(PolicyExecution.scheduled_at < cutoff, or_(has_newer, ~bound))
                        .execution_options(synchronize_session=False))
        return res.rowcount or 0


def list_executions(ctx: ServiceContext, p: Principal, policy_id: str, vault_id: str | None = None,
                    limit: int = 100) -> list[PolicyExecution]:
    """The recorded decisions of a policy, newest first (what ran, what was skipped and why)."""
    with ctx.tx() as s:
        get_policy(s, p.project_id, policy_id)
        q = select(PolicyExecution).where(PolicyExecution.policy_id == policy_id)
        if vault_id:
            q = q.where(PolicyExecution.vault_id == vault_id)
        return list(s.scalars(q.order_by(PolicyExecution.scheduled_at.desc(), PolicyExecution.id.desc()).limit(limit)))


# ================================================================================================ retention
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


def _record_of(b: Backup) -> BackupRecord:
    rule = None
    if b.auto_trigger and b.retention_rule:
        try:
            rule = RetentionRule.decode(b.retention_rule)
        except ValueError:
            rule = None  # unknown encoding: treated as permanent, i.e. never expires by itself
    return BackupRecord(b.id, _aware(b.created_at), bool(b.auto_trigger), b.status, bool(b.used_by_image), rule)


def _plan(s: Session, vault_id: str, resource_id: str, current: CurrentRetention | None, now: datetime, *,
          lock: bool) -> tuple[RetentionPlan, dict[str, Backup]]:
    q = select(Backup).where(Backup.vault_id == vault_id, Backup.resource_id == resource_id,
                             Backup.parent_id.is_(None)).order_by(Backup.created_at, Backup.id)
    if lock:
        q = q.with_for_update()
    rows = {b.id: b for b in s.scalars(q)}
    return plan_retention([_record_of(b) for b in rows.values()], current, _aware(now)), rows


def expired_manual(rows, now: datetime) -> list[tuple[Backup, str]]:
    """Manual backups made with ``retention_duration_days`` (CBR v3 CheckpointParam, "manual backups
    only"; their ``expired_at``) are deleted once that time has passed. Policy retention never touches
    manual backups (guide 5.2); this is the user's own choice for that one backup. A backup used by an
    image is kept (guide 5.2, 6.2)."""
    out = []
    for b in rows:
        if (not b.auto_trigger and b.expired_at is not None and b.expired_at <= now and b.status == B.AVAILABLE
                and not b.used_by_image):
            out.append((b, f"manual backup kept until {_fmt(b.expired_at)} as asked when it was made "
                           "(retention_duration_days); expired"))
    return out


def apply_retention(ctx: ServiceContext, vault_id: str, resource_id: str, *, now: datetime | None = None,
                    source: str = "sweep") -> ResourceRetention | None:
    """Apply the vault's current retention to the backups of one resource in it (guide 5.2 Retention
    Rule, 5.7, 13.5.2; ``domain.retention.plan_retention`` decides) and delete what the plan prunes, each
    through a ``delete`` task that names the reason. When something is pruned, a ``retention`` task
    records the sweep in the operation logs. The backups are locked while planning, so two sweeps at once
    cannot both delete (the second sees them ``deleting``). Returns None when the vault is gone."""
    from opencbr.services import backups

    now = _naive(now or ctx.now())
    with ctx.tx() as s:
        vault = s.get(Vault, vault_id)
        if vault is None or vault.status == "deleting":
            return None
        current, policy = _current(s, vault_id)
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
            tid = backups.queue_delete_for_system(ctx, s, rows[bid], ("retention: " + why)[:1000])
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
        apply_retention(ctx, vault_id, resource_id, source="after_backup")
    except Exception:  # noqa: BLE001 - retention must not turn a good backup into a failed task
        log.exception("retention after backup of %s in vault %s failed; the next sweep retries", resource_id,
                      vault_id)


def retention_sweep(ctx: ServiceContext, *, now: datetime | None = None) -> list[ResourceRetention]:
    """Guide 5.2 (Retention Rule notes: "The system automatically deletes the earliest and expired
    backups ..."): apply retention to every resource that has automatic backups (or manual ones with an
    expiry) in a vault. Returns the plans that pruned something."""
    with ctx.tx() as s:
        pairs = list(s.execute(select(Backup.vault_id, Backup.resource_id).distinct().where(
            Backup.parent_id.is_(None), or_(Backup.auto_trigger.is_(True), Backup.expired_at.is_not(None)))
            .order_by(Backup.vault_id, Backup.resource_id)))
    out = []
    for vault_id, resource_id in pairs:
        try:
            r = apply_retention(ctx, vault_id, resource_id, now=now, source="sweep")
        except Exception:  # noqa: BLE001 - one bad vault must not stop the sweep
            log.exception("retention sweep of %s in vault %s failed", resource_id, vault_id)
            continue
        if r is not None and r.deleted:
            out.append(r)
    return out


def retention_preview(ctx: ServiceContext, p: Principal, policy_id: str, vault_id: str | None = None,
                      *, now: datetime | None = None) -> list[ResourceRetention]:
    """Dry run (beyond the guide, like ``restic forget --dry-run``): what the policy's retention would
    delete now, and why, for each resource with backups in ``vault_id`` (or in every vault the policy is
    applied to). Deletes nothing. A policy not applied to the vault is evaluated as if it were."""
    now = _naive(now or ctx.now())
    from opencbr.services.vaults import get_vault

    with ctx.tx() as s:
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


def prune_now(ctx: ServiceContext, p: Principal, policy_id: str, vault_id: str) -> list[ResourceRetention]:
    """Apply retention to a vault now instead of waiting for the next sweep (``cbr policy prune``). The
    policy must be the vault's backup policy: its rule is the one that applies there."""
    p.require_write()
    from opencbr.services.vaults import get_vault

    with ctx.tx() as s:
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
        r = apply_retention(ctx, vault_id, rid, source="manual")
        if r is not None:
            out.append(r)
    return out


__all__ = [
    "PolicyView", "get_policy", "bound_policy_ids", "bound_policy_ids_of", "vaults_bound_to", "spec_of", "create_policy", "list_policies",
    "show_policy", "update_policy", "delete_policy", "bind", "bind_at_creation", "associate", "dissociate",
    "preview_executions", "ExecutionOutcome", "scheduled_bindings", "run_due_executions", "purge_executions",
    "list_executions", "ResourceRetention", "apply_retention", "apply_retention_after_backup", "retention_sweep",
    "retention_preview", "prune_now",
]
