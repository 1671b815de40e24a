"""Per-project quotas (guide ch. 12): how many vaults, backups and policies a project may have, and the
total capacity of its vaults. Each project sees its quotas (used and limit); the operator sets them: a
default for every project in the settings (``quota_*``, -1 for none: guide 13.7.1 says the public service
puts no quota on vaults) and a project's own limits on top (``ProjectQuota`` rows).

Each counted thing is checked here and only here, in the transaction that creates it and under a lock on
the project row (PostgreSQL; SQLite serialises writers anyway), so two creations at once cannot both take
the last place: ``check_room`` for new vaults, backups and policies, ``check_capacity`` for capacity.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from opencbr.catalog.models import BackupUsage, Policy, Project, ProjectQuota, Vault
from opencbr.config import Settings
from opencbr.domain.errors import InvalidParameter, NotFound, QuotaExceeded
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

VAULT, BACKUP, CAPACITY, POLICY = "vault", "backup", "capacity", "policy"
TYPES = (VAULT, BACKUP, CAPACITY, POLICY)
UNLIMITED = -1
#: What each quota counts, in the words of its refusal and of the quota list.
UNITS = {VAULT: "count", BACKUP: "count", CAPACITY: "GB", POLICY: "count"}
_NAMES = {VAULT: "vaults", BACKUP: "backups", CAPACITY: "GB of vault capacity", POLICY: "policies"}
_SETTING = {VAULT: "quota_vaults", BACKUP: "quota_backups", CAPACITY: "quota_capacity_gb", POLICY: "quota_policies"}
#: The largest limit the operator may set (the capacity of 1024 vaults of the largest size).
MAX_LIMIT = 10_485_760 * 1024


class ProjectQuotaExceeded(QuotaExceeded):
    """A project quota would be exceeded; the message names the quota, its limit and what is used."""

    status = 403
    code = "BackupService.6970"


@dataclass(frozen=True)
class Quota:
    type: str
    used: int
    limit: int  # -1: none
    default: int
    overridden: bool

    def wire(self) -> dict:
        return {"type": self.type, "used": self.used, "quota": self.limit, "unit": UNITS[self.type],
                "default": self.default, "overridden": self.overridden}


def default_limit(settings: Settings, quota_type: str) -> int:
    value = int(getattr(settings, _SETTING[quota_type]))
    return UNLIMITED if value < 0 else value


def _overrides(s: Session, project_id: str) -> dict[str, int]:
    return {q.quota_type: q.limit for q in s.scalars(select(ProjectQuota).where(ProjectQuota.project_id == project_id))}


def limit_of(s: Session, settings: Settings, project_id: str, quota_type: str) -> int:
    row = s.get(ProjectQuota, (project_id, quota_type))
    return row.limit if row is not None else default_limit(settings, quota_type)


def used(s: Session, project_id: str, quota_type: str) -> int:
    """What the project has of the counted thing: its vaults (whatever their status), its backups (every
    top-level backup row: a server backup counts once, failed ones too until deleted), the capacity (GB)
    of its vaults, its backup and replication policies."""
    if quota_type == VAULT:
        q = select(func.count()).select_from(Vault).where(Vault.project_id == project_id)
    elif quota_type == BACKUP:  # the counts the database keeps (migration 0016), not millions of rows
        q = select(func.coalesce(func.sum(BackupUsage.backup_count), 0)).where(BackupUsage.project_id == project_id)
    elif quota_type == CAPACITY:
        q = select(func.coalesce(func.sum(Vault.size_gb), 0)).where(Vault.project_id == project_id)
    else:
        q = select(func.count()).select_from(Policy).where(Policy.project_id == project_id)
    return int(s.scalar(q) or 0)


def quotas_of(s: Session, settings: Settings, project_id: str) -> list[Quota]:
    own = _overrides(s, project_id)
    return [Quota(t, used(s, project_id, t), own.get(t, default_limit(settings, t)), default_limit(settings, t),
                  t in own) for t in TYPES]


# ------------------------------------------------------------------------------------ enforcement
def check_room(s: Session, settings: Settings, project_id: str, quota_type: str, adding: int = 1) -> None:
    """Refuse (403, BackupService.6970) when ``adding`` more vaults, backups or policies, or ``adding`` GB of
    capacity, would take the project over its quota. Call it in the transaction that creates them."""
    limit = limit_of(s, settings, project_id, quota_type)
    if limit == UNLIMITED or adding <= 0:
        return
    s.get(Project, project_id, with_for_update=True)  # serialises the project's creations (PostgreSQL)
    have = used(s, project_id, quota_type)
    if have + adding > limit:
        raise ProjectQuotaExceeded(
            f"quota exceeded: the project's {quota_type} quota is {limit} {_NAMES[quota_type]}; it has {have} "
            f"and this needs {adding} more (delete some, or ask the operator for a higher quota: guide ch. 12)")


def check_capacity(s: Session, settings: Settings, project_id: str, adding_gb: int) -> None:
    """The total capacity of the project's vaults may grow by ``adding_gb`` (a new vault, an expansion)."""
    check_room(s, settings, project_id, CAPACITY, adding_gb)


def capacity_headroom(s: Session, settings: Settings, project_id: str) -> int | None:
    """GB the project's vaults may still grow by (None: no limit), for automatic expansion."""
    limit = limit_of(s, settings, project_id, CAPACITY)
    if limit == UNLIMITED:
        return None
    s.get(Project, project_id, with_for_update=True)
    return max(0, limit - used(s, project_id, CAPACITY))


# ------------------------------------------------------------------------------------ tenant view
def show_quotas(s: Session, ctx: ServiceContext, p: Principal) -> list[Quota]:
    """The caller's project: used and limit of each quota (guide ch. 12, "How Do I View My Quotas?")."""
    return quotas_of(s, ctx.settings, p.project_id)


# ------------------------------------------------------------------------------------ operator
def _target(s: Session, p: Principal, project_id: str) -> Project:
    p.require_operator()  # guide ch. 12: no self-service; the operations administrator adjusts quotas
    project = s.get(Project, project_id) if isinstance(project_id, str) else None
    if project is None:
        raise NotFound(f"project {str(project_id)[:64]} not found", code="BackupService.6903")
    return project


def admin_show(s: Session, ctx: ServiceContext, p: Principal, project_id: str) -> list[Quota]:
    project = _target(s, p, project_id)
    return quotas_of(s, ctx.settings, project.id)


def check_limits(limits: object) -> dict[str, int]:
    if not isinstance(limits, dict) or not limits:
        raise InvalidParameter("quotas must name at least one of " + ", ".join(TYPES))
    out = {}
    for k, v in limits.items():
        if k not in TYPES:
            raise InvalidParameter(f"unknown quota {str(k)[:32]!r}; the quotas are " + ", ".join(TYPES))
        if isinstance(v, bool) or not isinstance(v, int) or not (UNLIMITED <= v <= MAX_LIMIT):
            raise InvalidParameter(f"quota {k} must be an integer from 0 to {MAX_LIMIT}, or -1 for no limit")
        out[k] = v
    return out


def admin_set(s: Session, ctx: ServiceContext, p: Principal, project_id: str, limits: object) -> list[Quota]:
    """The project's own limits (the others keep the default). A limit below what the project has is
    allowed: nothing is deleted, and it can create no more until it is under the limit again."""
    project = _target(s, p, project_id)
    now = ctx.now()
    for quota_type, limit in check_limits(limits).items():
        row = s.get(ProjectQuota, (project.id, quota_type))
        if row is None:
            s.add(ProjectQuota(project_id=project.id, quota_type=quota_type, limit=limit, updated_at=now))
        else:
            row.limit, row.updated_at = limit, now
    s.flush()
    return quotas_of(s, ctx.settings, project.id)


def admin_reset(s: Session, ctx: ServiceContext, p: Principal, project_id: str,
                types: list[str] | None = None) -> list[Quota]:
    """Back to the defaults: the named quotas, or all of them."""
    project = _target(s, p, project_id)
    for t in types or []:
        if t not in TYPES:
            raise InvalidParameter(f"unknown quota {str(t)[:32]!r}; the quotas are " + ", ".join(TYPES))
    q = delete(ProjectQuota).where(ProjectQuota.project_id == project.id)
    if types:
        q = q.where(ProjectQuota.quota_type.in_(types))
    s.execute(q)
    return quotas_of(s, ctx.settings, project.id)
