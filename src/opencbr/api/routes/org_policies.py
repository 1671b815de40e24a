"""CBR v3 organization policy routes (CBR v3 API 6.9; docs/organization-policies.md): the operator
deploys a backup or replication policy to the projects of chosen accounts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from opencbr.api import wire
from opencbr.api.deps import get_ctx, principal
from opencbr.api.routes import common as L
from opencbr.api.routing import JSONRoute
from opencbr.domain import policy as P
from opencbr.services import audit, org_policies
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}", route_class=JSONRoute)


# ------------------------------------------------------------------------------------ shapes
def org_policy_resp(view: org_policies.OrgPolicyView) -> dict[str, Any]:
    """An OrganizationPolicy (CBR v3 API 5): the policy every target project receives is the ``policy_*``
    fields; ``created_at``/``updated_at`` are OpenCBR's additions."""
    org, doc = view.org, view.spec.to_document()
    return {
        "id": org.id,
        "name": org.name,
        "description": org.description,
        "operation_type": org.operation_type,
        "domain_id": org.account_id,
        "domain_name": view.domain_name,
        "policy_name": doc["name"],
        "policy_enabled": doc["enabled"],
        "policy_operation_definition": doc["operation_definition"],
        "policy_trigger": {"properties": doc["trigger"]["properties"]},
        "status": view.status,
        "effective_scope": view.effective_scope,
        "created_at": wire.iso(org.created_at),
        "updated_at": wire.iso(org.updated_at),
    }


def deployment_resp(dep) -> dict[str, Any]:
    """An OrganizationPolicyStatus; ``fail_reason`` (why a failed deployment failed) is OpenCBR's."""
    return {"policy_id": dep.policy_id or None, "domain_id": dep.account_id, "project_id": dep.project_id,
            "status": dep.status, "fail_reason": dep.reason or None, "updated_at": wire.iso(dep.updated_at)}


# ------------------------------------------------------------------------------------ routes
@router.post("/organization-policies")
def create_org_policy(body: wire.PolicyBody, p: Principal = Depends(principal),
                      ctx: ServiceContext = Depends(get_ctx)):
    req = {k: body.policy.get(k) for k in ("name", "operation_type", "policy_name", "effective_scope")
           if k in body.policy}
    with audit.trace(ctx, p, "createOrganizationPolicy", req) as t, ctx.tx() as s:
        view = org_policies.create_org_policy(s, ctx, p, body.policy)
        t.resource(view.org.id, view.org.name)
    return {"policy": org_policy_resp(view)}


@router.get("/organization-policies")
def list_org_policies(operation_type: str | None = None, limit: int | None = None, offset: int | None = None,
                      p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    limit, offset = L.page(limit, offset)
    with ctx.read() as s:
        views, total = org_policies.list_org_policies(
            s, p, operation_type=L.choice(operation_type, "operation_type", P.OPERATION_TYPES), limit=limit,
            offset=offset)
    return {"policies": [org_policy_resp(v) for v in views], "count": total, "limit": limit, "offset": offset}


@router.get("/organization-policies/{organization_policy_id}")
def show_org_policy(organization_policy_id: str, p: Principal = Depends(principal),
                    ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        view = org_policies.show_org_policy(s, p, organization_policy_id)
    return {"policy": org_policy_resp(view)}


@router.put("/organization-policies/{organization_policy_id}")
def update_org_policy(organization_policy_id: str, body: wire.PolicyBody, p: Principal = Depends(principal),
                      ctx: ServiceContext = Depends(get_ctx)):
    """Every deployed policy changes with it; a change of scope deploys or withdraws."""
    with audit.trace(ctx, p, "updateOrganizationPolicy", body.policy, resource_id=organization_policy_id) as t, \
            ctx.tx() as s:
        view = org_policies.update_org_policy(s, ctx, p, organization_policy_id, body.policy)
        t.resource(view.org.id, view.org.name)
    return {"policy": org_policy_resp(view)}


@router.delete("/organization-policies/{organization_policy_id}")
def delete_org_policy(organization_policy_id: str, p: Principal = Depends(principal),
                      ctx: ServiceContext = Depends(get_ctx)):
    """Deletes the deployed policies too (removed from their vaults; no backup is deleted)."""
    with audit.trace(ctx, p, "deleteOrganizationPolicy", resource_id=organization_policy_id) as t, ctx.tx() as s:
        view = org_policies.delete_org_policy(s, p, organization_policy_id)
        t.resource(view.org.id, view.org.name)
    return {}


@router.get("/organization-policies/{organization_policy_id}/policy-detail")
def list_org_policy_detail(organization_policy_id: str, limit: int | None = None, offset: int | None = None,
                           p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """The deployment in each project: success, or failed with the reason."""
    limit, offset = L.page(limit, offset)
    with ctx.read() as s:
        deps = org_policies.deployment_status(s, p, organization_policy_id)
    return {"policies": [deployment_resp(d) for d in deps[offset:offset + limit]], "count": len(deps),
            "limit": limit, "offset": offset}
