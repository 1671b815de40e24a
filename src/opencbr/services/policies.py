"""Policies (guide chapter 5; rules in ``opencbr.domain.policy``): create, list, show, update and delete
policies (CBR v3 API 6.4); apply them to vaults and remove them (6.1).

Running a policy (its executions) is ``services.executions``; applying its retention rule is
``services.retention``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from opencbr.catalog.models import (
    OrganizationPolicyDeployment,
    Policy,
    PolicyBinding,
    PolicyExecution,
    Project,
    Vault,
)
from opencbr.domain import policy as P
from opencbr.domain.errors import Forbidden, InvalidParameter, NotFound, StateConflict
from opencbr.services import quotas
from opencbr.services.context import ServiceContext
from opencbr.services.lookups import get_vault, project_row
from opencbr.services.principal import Principal


# ================================================================================================ lookups
def get_policy(s: Session, project_id: str, policy_id: str, *, for_update: bool = False) -> Policy:
    return project_row(s, Policy, project_id, policy_id, what="policy", code="BackupService.6301",
                       for_update=for_update)


def bound_policy_ids(s: Session, vault_id: str) -> list[str]:
    return bound_policy_ids_of(s, [vault_id]).get(vault_id, [])


# Built once (a list page runs it): the statement keeps its cache key; the ids go in one expanding parameter.
_POLICIES_OF_VAULTS = (select(PolicyBinding.vault_id, PolicyBinding.policy_id)
                       .where(PolicyBinding.vault_id.in_(bindparam("vault_ids", expanding=True)))
                       .order_by(PolicyBinding.operation_type))


def bound_policy_ids_of(s: Session, vault_ids: list[str]) -> dict[str, list[str]]:
    """The policies applied to each of the vaults, in one query."""
    out: dict[str, list[str]] = {}
    for vid, pid in s.execute(_POLICIES_OF_VAULTS, {"vault_ids": vault_ids}):
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
    #: The organization policy that deployed it ("" for the project's own policies).
    organization_policy_id: str = ""


def _view(s: Session, policy: Policy) -> PolicyView:
    bindings = list(s.scalars(select(PolicyBinding).where(PolicyBinding.policy_id == policy.id)
                              .order_by(PolicyBinding.created_at, PolicyBinding.id)))
    return PolicyView(policy, spec_of(policy), bindings, managing_organization_policy(s, policy.id))


def managing_organization_policy(s: Session, policy_id: str) -> str:
    """The id of the organization policy that deployed this policy, or ""."""
    return s.scalar(select(OrganizationPolicyDeployment.organization_policy_id)
                    .where(OrganizationPolicyDeployment.policy_id == policy_id).limit(1)) or ""


def _count(s: Session, project_id: str, operation_type: str) -> int:
    return s.scalar(select(func.count()).select_from(Policy).where(
        Policy.project_id == project_id, Policy.operation_type == operation_type)) or 0


def create_policy(s: Session, ctx: ServiceContext, p: Principal, body: object) -> PolicyView:
    """Guide 5.2 / 5.3: create a backup or replication policy. Every field rule is
    ``domain.policy.validate_policy_create``; guide 1.6 (at most 32 of each type) is ``check_policy_count``,
    checked under a lock on the project so two concurrent creations cannot both take the 32nd place."""
    p.require_write()
    spec = P.validate_policy_create(body, current_region=ctx.settings.region)
    now = ctx.now()
    s.get(Project, p.project_id, with_for_update=True)  # serialises creations in the project (PostgreSQL)
    P.check_policy_count(spec.operation_type, _count(s, p.project_id, spec.operation_type))
    quotas.check_room(s, ctx.settings, p.project_id, quotas.POLICY)
    policy = Policy(project_id=p.project_id, name=spec.name, operation_type=spec.operation_type,
                    enabled=spec.enabled, spec=spec.to_document(), trigger_start=now, created_at=now, updated_at=now)
    s.add(policy)
    s.flush()
    return PolicyView(policy, spec, [])


def list_policies(s: Session, p: Principal, *, operation_type: str | None = None,
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
    return [_view(s, pol) for pol in s.scalars(q.order_by(Policy.created_at, Policy.id))]


def show_policy(s: Session, p: Principal, policy_id: str) -> PolicyView:
    return _view(s, get_policy(s, p.project_id, policy_id))


def refuse_managed(s: Session, policy: Policy) -> None:
    """A policy an organization policy deployed (``services.org_policies``) belongs to the operator: its
    project may apply it to vaults and remove it from them, but not change or delete it (403)."""
    org_id = managing_organization_policy(s, policy.id)
    if org_id:
        raise Forbidden(f"policy {policy.id} is managed by organization policy {org_id} of the operator of this "
                        "installation: it can be applied to vaults but not changed or deleted here",
                        code="BackupService.6307")


def update_policy(s: Session, ctx: ServiceContext, p: Principal, policy_id: str, body: object) -> PolicyView:
    """Guide 5.4: change a policy. The merge and its rules are ``domain.policy.apply_policy_update``; storing
    the result is ``replace_spec``. A policy deployed by an organization policy is refused (``refuse_managed``)."""
    p.require_write()
    policy = get_policy(s, p.project_id, policy_id, for_update=True)
    refuse_managed(s, policy)
    new = P.apply_policy_update(spec_of(policy), body, current_region=ctx.settings.region)
    replace_spec(s, ctx, policy, new)
    return _view(s, policy)


def replace_spec(s: Session, ctx: ServiceContext, policy: Policy, new: P.PolicySpec) -> None:
    """Store a policy's new spec. When the execution times change, the trigger restarts now (its start time
    is the new schedule's anchor: a day-based cycle counts from the day of the change, guide 5.2). A new
    retention rule applies from the next backup or sweep on, with the semantics of guide 13.5.2
    (``domain.retention``)."""
    now = ctx.now()
    if not new.same_trigger(spec_of(policy)):
        policy.trigger_start = now
    policy.name, policy.enabled, policy.spec = new.name, new.enabled, new.to_document()
    policy.updated_at = now
    # The next tick computes each binding's next execution time again (services/executions.py): the one
    # stored may be later than the new schedule's first time.
    s.execute(update(PolicyBinding).where(PolicyBinding.policy_id == policy.id).values(next_due_at=None))
    s.flush()


def delete_policy(s: Session, p: Principal, policy_id: str) -> PolicyView:
    """Guide 5.5: delete a policy (``remove_policy``). A policy deployed by an organization policy is
    refused (``refuse_managed``)."""
    p.require_write()
    policy = get_policy(s, p.project_id, policy_id, for_update=True)
    refuse_managed(s, policy)
    return remove_policy(s, policy)


def remove_policy(s: Session, policy: Policy) -> PolicyView:
    """Guide 5.5: a policy is removed from every vault it was applied to; no backup is deleted ("Deleting a
    policy will not delete the backups or replicas generated based on the policy")."""
    view = _view(s, policy)
    s.execute(delete(PolicyBinding).where(PolicyBinding.policy_id == policy.id))
    s.execute(delete(PolicyExecution).where(PolicyExecution.policy_id == policy.id))
    s.delete(policy)
    return view


# ------------------------------------------------------------------------------------ vault bindings
def bind(s: Session, p: Principal, vault: Vault, policy: Policy, *, destination_vault_id: str = "",
         destination_project_id: str = "", now: datetime | None = None) -> PolicyBinding:
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


def associate(s: Session, ctx: ServiceContext, p: Principal, vault_id: str, policy_id: object, *,
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
    vault = get_vault(s, p.project_id, vault_id, for_update=True)
    if vault.status == "deleting":
        raise StateConflict(f"vault {vault_id} is being deleted", code="BackupService.6211")
    now = ctx.now()
    out = []
    for pid in dict.fromkeys(ids):
        policy = get_policy(s, p.project_id, pid)
        dest = _replication_destination(s, policy, vault, destination_vault_id if pid == ids[0] else None)
        dest_project = spec_of(policy).destination_project_id or "" if dest else ""
        out.append(bind(s, p, vault, policy, destination_vault_id=dest, destination_project_id=dest_project,
                        now=now))
    vault.updated_at = now
    return out


def dissociate(s: Session, ctx: ServiceContext, p: Principal, vault_id: str, policy_id: object) -> PolicyBinding:
    """Guide 5.7: remove a policy from a vault. No backup is deleted; backups kept by a time period still
    expire by the rule they were made under, backups kept by quantity are kept (``domain.retention``). A
    backup already running finishes."""
    p.require_write()
    if not isinstance(policy_id, str) or not policy_id:
        raise InvalidParameter("policy_id is required: the policy to remove from the vault")
    vault = get_vault(s, p.project_id, vault_id, for_update=True)
    get_policy(s, p.project_id, policy_id)
    binding = s.scalar(select(PolicyBinding).where(PolicyBinding.vault_id == vault.id,
                                                   PolicyBinding.policy_id == policy_id))
    if binding is None:
        raise NotFound(f"policy {policy_id} is not applied to vault {vault_id}", code="BackupService.6302")
    s.delete(binding)
    vault.updated_at = ctx.now()
    return binding


