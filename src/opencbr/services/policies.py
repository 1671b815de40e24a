"""Policies (guide chapter 5; rules in ``opencbr.domain.policy``): what vaults need of them.

The policy API, applying/removing policies and the scheduler build on this module."""

from __future__ import annotations

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from opencbr.catalog.models import Policy, PolicyBinding, Vault
from opencbr.domain import policy as P
from opencbr.domain.errors import NotFound
from opencbr.services.principal import Principal


def get_policy(s: Session, project_id: str, policy_id: str) -> Policy:
    pol = s.get(Policy, policy_id) if isinstance(policy_id, str) else None
    if pol is None or pol.project_id != project_id:
        raise NotFound(f"policy {policy_id} not found", code="BackupService.6301")
    return pol


def bound_policy_ids(s: Session, vault_id: str) -> list[str]:
    return [pid for (pid,) in s.execute(select(PolicyBinding.policy_id).where(PolicyBinding.vault_id == vault_id)
                                        .order_by(PolicyBinding.operation_type))]


def vaults_bound_to(policy_id: str) -> Select:
    """The ids of the vaults a policy is applied to, as a subquery (list_vault's ``policy_id`` filter)."""
    return select(PolicyBinding.vault_id).where(PolicyBinding.policy_id == policy_id)


def bind(s: Session, p: Principal, vault: Vault, policy: Policy, destination_vault_id: str = "",
         destination_project_id: str = "") -> PolicyBinding:
    """Guide 5.6 and 1.6: apply a policy to a vault; one backup and one replication policy per vault;
    which vaults take which policies is ``domain.policy.check_vault_binding``."""
    others = [op for (op,) in s.execute(select(PolicyBinding.operation_type).where(
        PolicyBinding.vault_id == vault.id, PolicyBinding.policy_id != policy.id))]
    P.check_vault_binding(policy.operation_type, vault.object_type, vault.protect_type, others)
    existing = s.scalar(select(PolicyBinding).where(PolicyBinding.vault_id == vault.id,
                                                    PolicyBinding.policy_id == policy.id))
    if existing is not None:
        return existing
    binding = PolicyBinding(project_id=p.project_id, vault_id=vault.id, policy_id=policy.id,
                            operation_type=policy.operation_type, destination_vault_id=destination_vault_id,
                            destination_project_id=destination_project_id)
    s.add(binding)
    s.flush()
    return binding


def bind_at_creation(s: Session, p: Principal, vault: Vault, policy_id: str) -> PolicyBinding:
    """VaultCreate.backup_policy_id: apply a backup policy as the vault is created (guide 2.2.1 step 7)."""
    policy = get_policy(s, p.project_id, policy_id)
    return bind(s, p, vault, policy)
