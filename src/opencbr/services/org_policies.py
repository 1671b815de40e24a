"""Organization policies (CBR v3 API 6.9; docs/organization-policies.md): the operator of the installation
defines a backup or replication policy once and it is deployed to every project of the target accounts
(chosen accounts, or all of them) as an ordinary policy of that project (``services.policies``), which the
scheduler runs like any other once the project applies it to a vault.

Who may do what: only the operator creates, changes and deletes organization policies. The tenants of a
target account may read the organization policy and the deployments in their own account's projects;
the tenants of any other account never see it (404, and lists without it). A deployed policy is managed:
its project may apply it to vaults and remove it from them, but not change or delete it
(``policies.refuse_managed``).

Deployment is synchronous (a catalog row per project): creating an organization policy deploys it,
changing it changes every deployed policy (and deploys again where it had failed, and to accounts added
to its scope), deleting it deletes the deployed policies (removing them from their vaults; no backup is
deleted). A project created later in a target account receives it at creation (``deploy_to_new_project``).
A project where the policy cannot be created (its 32 policies of the type, guide 1.6) records the
deployment as failed with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from opencbr.catalog.models import (
    Account,
    OrganizationPolicy,
    OrganizationPolicyDeployment,
    Policy,
    Project,
)
from opencbr.domain import policy as P
from opencbr.domain.errors import CBRError, InvalidParameter, NotFound
from opencbr.services import policies
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

SUCCESS, FAILED = "success", "failed"
#: ``effective_scope`` naming every account of the installation (also what an omitted scope means).
ALL = "all"
DESCRIPTION_MAX = 255
MAX_SCOPE_ACCOUNTS = 100
SCOPE_MAX_CHARS = 1024


@dataclass
class OrgPolicyView:
    org: OrganizationPolicy
    spec: P.PolicySpec
    domain_name: str
    deployments: list[OrganizationPolicyDeployment]

    @property
    def status(self) -> str:
        """``success`` when every target project has the policy, ``failed`` when one could not take it."""
        return FAILED if any(d.status == FAILED for d in self.deployments) else SUCCESS

    @property
    def effective_scope(self) -> str:
        return ALL if self.org.all_accounts else ",".join(self.org.account_ids)


# ================================================================================================ reading
def _covers(org: OrganizationPolicy, account_id: str) -> bool:
    return org.all_accounts or account_id in (org.account_ids or [])


def _visible(p: Principal, org: OrganizationPolicy) -> bool:
    """The operator sees every organization policy; a tenant those deployed to its own account."""
    return p.is_operator or _covers(org, p.account_id)


def _get(s: Session, p: Principal, org_id: str, *, for_update: bool = False) -> OrganizationPolicy:
    q = select(OrganizationPolicy).where(OrganizationPolicy.id == org_id)
    org = s.scalar(q.with_for_update() if for_update else q) if isinstance(org_id, str) and len(org_id) <= 36 else None
    if org is None or not _visible(p, org):
        raise NotFound(f"organization policy {org_id} not found", code="BackupService.6310")
    return org


def _deployments(s: Session, org_id: str, account_id: str | None = None) -> list[OrganizationPolicyDeployment]:
    q = select(OrganizationPolicyDeployment).where(OrganizationPolicyDeployment.organization_policy_id == org_id)
    if account_id is not None:
        q = q.where(OrganizationPolicyDeployment.account_id == account_id)
    return list(s.scalars(q.order_by(OrganizationPolicyDeployment.id)))


def _view(s: Session, p: Principal, org: OrganizationPolicy) -> OrgPolicyView:
    """The deployments a caller sees: all for the operator, its own account's for a tenant."""
    account = s.get(Account, org.account_id)
    deps = _deployments(s, org.id, None if p.is_operator else p.account_id)
    return OrgPolicyView(org, P.validate_policy_create(org.spec), account.name if account else "", deps)


def list_org_policies(s: Session, p: Principal, *, operation_type: str | None = None, limit: int = 1000,
                      offset: int = 0) -> tuple[list[OrgPolicyView], int]:
    """The organization policies the caller may see, oldest first, and how many there are."""
    q = select(OrganizationPolicy)
    if operation_type:
        q = q.where(OrganizationPolicy.operation_type == operation_type)
    rows = [o for o in s.scalars(q.order_by(OrganizationPolicy.created_at, OrganizationPolicy.id)) if _visible(p, o)]
    return [_view(s, p, o) for o in rows[offset:offset + limit]], len(rows)


def show_org_policy(s: Session, p: Principal, org_id: str) -> OrgPolicyView:
    return _view(s, p, _get(s, p, org_id))


def deployment_status(s: Session, p: Principal, org_id: str) -> list[OrganizationPolicyDeployment]:
    """Where the policy is deployed, one row per project: success with the project's policy, or failed
    with the reason."""
    return _view(s, p, _get(s, p, org_id)).deployments


# ================================================================================================ the body
def _text(body: dict, key: str, max_chars: int) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > max_chars:
        raise InvalidParameter(f"{key} must be a string of at most {max_chars} characters")
    return value


def _policy_body(body: dict, *, operation_type: str) -> dict:
    """The ``policy_*`` fields of an organization policy, as the body of an ordinary policy."""
    out: dict = {"operation_type": operation_type}
    for key, target in (("policy_name", "name"), ("policy_enabled", "enabled"),
                        ("policy_operation_definition", "operation_definition"), ("policy_trigger", "trigger")):
        if key in body:
            out[target] = body[key]
    return out


def _scope(s: Session, value: object) -> tuple[bool, list[str]]:
    """``effective_scope``: ``all`` (every account, also when omitted) or a comma-separated list of
    account ids or names, which must exist; returns (all accounts, their ids)."""
    if value is None or value == ALL:
        return True, []
    if not isinstance(value, str) or len(value) > SCOPE_MAX_CHARS:
        raise InvalidParameter('effective_scope must be "all" or a comma-separated list of account ids or names')
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names or len(names) > MAX_SCOPE_ACCOUNTS:
        raise InvalidParameter(f'effective_scope must be "all" or name 1 to {MAX_SCOPE_ACCOUNTS} accounts')
    ids: list[str] = []
    for ref in names:
        account = s.get(Account, ref) or s.scalar(select(Account).where(Account.name == ref))
        if account is None:
            raise InvalidParameter(f"effective_scope names account {ref!r}, which does not exist",
                                   code="BackupService.6311")
        ids.append(account.id)
    return False, list(dict.fromkeys(ids))


# ================================================================================================ deploying
def _target_projects(s: Session, org: OrganizationPolicy) -> list[Project]:
    """The projects of the target accounts, with no project being created meanwhile: a project (of a new
    account too) is either committed before and seen here, or created after this transaction commits,
    and then sees this organization policy in ``deploy_to_new_project``."""
    _hold_project_creation(s)
    q = select(Project)
    if not org.all_accounts:
        q = q.where(Project.account_id.in_(org.account_ids or []))
    return list(s.scalars(q.order_by(Project.created_at, Project.id)))


def _hold_project_creation(s: Session) -> None:
    """Why a table lock: a project inserted by a transaction still open (an account being created at this
    moment) has no row to lock yet, and neither transaction would see the other's row, so the new project
    would miss an ``all``-scope policy until its next update. PostgreSQL's SHARE mode waits for every open
    insert into ``projects`` to commit and holds off new ones until this transaction ends (it does not
    stop row locks or reads); it is taken before any other lock here, so a project insert waiting behind
    it holds nothing this transaction needs. SQLite runs one writing transaction at a time already."""
    if s.get_bind().dialect.name == "postgresql":
        s.execute(text("LOCK TABLE projects IN SHARE MODE"))


def _deploy(s: Session, ctx: ServiceContext, org: OrganizationPolicy, project: Project,
            dep: OrganizationPolicyDeployment | None) -> OrganizationPolicyDeployment:
    """Create the project's policy from the organization policy; a rule of the project that refuses it
    (guide 1.6: 32 policies of a type) is recorded as a failed deployment. ``create_policy`` checks its
    rules before it writes anything, so a refusal leaves nothing behind."""
    dep = dep or OrganizationPolicyDeployment(organization_policy_id=org.id, account_id=project.account_id,
                                              project_id=project.id)
    acting = Principal(account_id=project.account_id, project_id=project.id, user_id="",
                       user_name="organization-policy", role="admin", is_operator=True)
    try:
        view = policies.create_policy(s, ctx, acting, dict(org.spec))
    except CBRError as e:
        dep.status, dep.policy_id, dep.reason = FAILED, "", e.message
    else:
        dep.status, dep.policy_id, dep.reason = SUCCESS, view.policy.id, ""
    dep.updated_at = ctx.now()
    s.add(dep)  # after create_policy: its queries would flush a half-filled row
    s.flush()
    return dep


def _withdraw(s: Session, dep: OrganizationPolicyDeployment) -> None:
    """Delete the project's deployed policy (removing it from its vaults) and the deployment."""
    policy = s.get(Policy, dep.policy_id) if dep.policy_id else None
    if policy is not None:
        policies.remove_policy(s, policy)
    s.delete(dep)
    s.flush()


def _sync(s: Session, ctx: ServiceContext, org: OrganizationPolicy, *, respec: bool) -> None:
    """Make the deployments match the organization policy: withdraw it from projects out of its scope,
    deploy it where it is missing or had failed, and (``respec``) give the deployed policies its spec."""
    spec = P.validate_policy_create(org.spec)
    targets = {pr.id: pr for pr in _target_projects(s, org)}
    existing = {d.project_id: d for d in _deployments(s, org.id)}
    for project_id, dep in existing.items():
        if project_id not in targets:
            _withdraw(s, dep)
    for project_id, project in targets.items():
        dep = existing.get(project_id)
        policy = s.get(Policy, dep.policy_id) if dep is not None and dep.policy_id else None
        if policy is None:
            _deploy(s, ctx, org, project, dep)
        elif respec:
            policies.replace_spec(s, ctx, policy, spec)
            dep.updated_at = ctx.now()


def deploy_to_new_project(s: Session, ctx: ServiceContext, project: Project) -> None:
    """A project just created (with its account, or in an existing one) receives the organization
    policies whose scope covers its account. Called inside the transaction that creates it."""
    for org in s.scalars(select(OrganizationPolicy).order_by(OrganizationPolicy.created_at)):
        if _covers(org, project.account_id):
            _deploy(s, ctx, org, project, None)


# ================================================================================================ changing
def create_org_policy(s: Session, ctx: ServiceContext, p: Principal, body: object) -> OrgPolicyView:
    """Create an organization policy (operator only) and deploy it to the projects of its scope. Fields:
    ``name``*, ``operation_type``*, ``policy_name``*, ``policy_enabled``*, ``policy_operation_definition``*,
    ``policy_trigger``*, ``description``, ``effective_scope``; the policy's own rules are
    ``domain.policy.validate_policy_create``, checked once here."""
    p.require_operator()
    if not isinstance(body, dict):
        raise InvalidParameter("The request must contain a policy object.")
    name = P.validate_policy_name(body.get("name"))
    for key in ("policy_name", "policy_enabled"):
        if body.get(key) is None:
            raise InvalidParameter(f"{key} is required")
    op = body.get("operation_type")
    spec = P.validate_policy_create(_policy_body(body, operation_type=op), current_region=ctx.settings.region)
    all_accounts, account_ids = _scope(s, body.get("effective_scope"))
    now = ctx.now()
    org = OrganizationPolicy(account_id=p.account_id, name=name, description=_text(body, "description", DESCRIPTION_MAX),
                             operation_type=spec.operation_type, spec=spec.to_document(), all_accounts=all_accounts,
                             account_ids=account_ids, created_at=now, updated_at=now)
    s.add(org)
    s.flush()
    _sync(s, ctx, org, respec=False)
    return _view(s, p, org)


def update_org_policy(s: Session, ctx: ServiceContext, p: Principal, org_id: str, body: object) -> OrgPolicyView:
    """Change an organization policy (operator only; every field optional). A change of the policy's
    fields reaches every deployed policy (``policies.replace_spec``: new execution times restart the
    trigger, guide 5.2); a change of scope deploys to the accounts added and withdraws from those removed;
    deployments that had failed are tried again."""
    p.require_operator()
    if not isinstance(body, dict):
        raise InvalidParameter("The request must contain a policy object.")
    org = _get(s, p, org_id, for_update=True)
    if "name" in body:
        org.name = P.validate_policy_name(body["name"])
    if "description" in body:
        org.description = _text(body, "description", DESCRIPTION_MAX)
    old = P.validate_policy_create(org.spec)
    new = P.apply_policy_update(old, _policy_body(body, operation_type=org.operation_type),
                                current_region=ctx.settings.region)
    org.spec = new.to_document()
    if body.get("effective_scope") is not None:  # a null scope changes nothing (it never widens to all)
        org.all_accounts, org.account_ids = _scope(s, body["effective_scope"])
    org.updated_at = ctx.now()
    s.flush()
    _sync(s, ctx, org, respec=new != old)
    return _view(s, p, org)


def delete_org_policy(s: Session, p: Principal, org_id: str) -> OrgPolicyView:
    """Delete an organization policy (operator only) and the policies it deployed, which are removed from
    their vaults (guide 5.5: no backup is deleted)."""
    p.require_operator()
    org = _get(s, p, org_id, for_update=True)
    view = _view(s, p, org)
    for dep in _deployments(s, org.id):
        _withdraw(s, dep)
    s.delete(org)
    s.flush()
    return view
