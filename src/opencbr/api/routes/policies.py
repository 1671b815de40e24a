"""CBR v3 policy routes (CBR v3 API 6.4), associate / dissociate (6.1), and OpenCBR extensions: the next
execution times, the recorded executions, and a retention dry run / prune."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from opencbr.api import wire
from opencbr.api.deps import get_ctx, principal
from opencbr.api.routes import common as L
from opencbr.api.routing import JSONRoute
from opencbr.domain import policy as P
from opencbr.services import audit, executions, policies, retention
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}", route_class=JSONRoute)


# ------------------------------------------------------------------------------------ routes
@router.post("/policies")
def create_policy(body: wire.PolicyBody, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    req = {k: body.policy.get(k) for k in ("name", "operation_type", "enabled") if k in body.policy}
    with audit.trace(ctx, p, "createPolicy", req) as t, ctx.tx() as s:
        view = policies.create_policy(s, ctx, p, body.policy)
        t.resource(view.policy.id, view.policy.name)
    return {"policy": wire.policy_resp(view)}


@router.get("/policies")
def list_policies(operation_type: str | None = None, vault_id: str | None = None, p: Principal = Depends(principal),
                  ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        views = policies.list_policies(s, p, operation_type=L.choice(operation_type, "operation_type",
                                                                     P.OPERATION_TYPES),
                                       vault_id=L.text(vault_id, "vault_id"))
    return {"policies": [wire.policy_resp(v) for v in views], "count": len(views)}


@router.get("/policies/{policy_id}")
def show_policy(policy_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        view = policies.show_policy(s, p, policy_id)
    return {"policy": wire.policy_resp(view)}


@router.put("/policies/{policy_id}")
def update_policy(policy_id: str, body: wire.PolicyBody, p: Principal = Depends(principal),
                  ctx: ServiceContext = Depends(get_ctx)):
    with audit.trace(ctx, p, "updatePolicy", body.policy, resource_id=policy_id) as t, ctx.tx() as s:
        view = policies.update_policy(s, ctx, p, policy_id, body.policy)
        t.resource(view.policy.id, view.policy.name)
    return {"policy": wire.policy_resp(view)}


@router.delete("/policies/{policy_id}")
def delete_policy(policy_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """Deletes the policy and removes it from its vaults; no backup is deleted (guide 5.5)."""
    with audit.trace(ctx, p, "deletePolicy", resource_id=policy_id) as t, ctx.tx() as s:
        view = policies.delete_policy(s, p, policy_id)
        t.resource(view.policy.id, view.policy.name)
    return {}


@router.post("/vaults/{vault_id}/associatepolicy")
def associate_policy(vault_id: str, body: wire.AssociateBody, p: Principal = Depends(principal),
                     ctx: ServiceContext = Depends(get_ctx)):
    req = wire.dump(body)
    with audit.trace(ctx, p, "associatePolicy", req, resource_id=vault_id), ctx.tx() as s:
        bindings = policies.associate(s, ctx, p, vault_id, body.policy_id,
                                      destination_vault_id=body.destination_vault_id,
                                      add_policy_ids=body.add_policy_ids)
    return {"associate_policy": wire.binding_resp(bindings[0])}


@router.post("/vaults/{vault_id}/dissociatepolicy")
def dissociate_policy(vault_id: str, body: wire.DissociateBody, p: Principal = Depends(principal),
                      ctx: ServiceContext = Depends(get_ctx)):
    """Removes the policy from the vault; no backup is deleted (guide 5.7)."""
    with audit.trace(ctx, p, "dissociatePolicy", {"policy_id": body.policy_id}, resource_id=vault_id), ctx.tx() as s:
        binding = policies.dissociate(s, ctx, p, vault_id, body.policy_id)
    return {"dissociate_policy": wire.binding_resp(binding)}


# ------------------------------------------------------------------------------------ extensions
@router.get("/policies/{policy_id}/preview")
def preview_policy(policy_id: str, next: int = 10, p: Principal = Depends(principal),  # noqa: A002
                   ctx: ServiceContext = Depends(get_ctx)):
    """OpenCBR extension: the next execution times (UTC, and in the policy's time zone when it has one)."""
    with ctx.tx() as s:
        preview = executions.preview_executions(s, ctx, p, policy_id, count=next)
    return wire.preview_resp(policy_id, preview)


@router.get("/policies/{policy_id}/executions")
def list_executions(policy_id: str, vault_id: str | None = None, limit: int = 100, p: Principal = Depends(principal),
                    ctx: ServiceContext = Depends(get_ctx)):
    """OpenCBR extension: the execution decisions the scheduler recorded (fired, skipped and why)."""
    limit, _ = L.page(limit, 0)
    with ctx.tx() as s:
        rows = executions.list_executions(s, p, policy_id, vault_id=L.text(vault_id, "vault_id"), limit=limit)
    return {"executions": [wire.execution_resp(e) for e in rows], "count": len(rows)}


@router.get("/policies/{policy_id}/retention-preview")
def retention_preview(policy_id: str, vault_id: str | None = None, p: Principal = Depends(principal),
                      ctx: ServiceContext = Depends(get_ctx)):
    """OpenCBR extension: a retention dry run — what the policy's rule would delete now, and why."""
    with ctx.tx() as s:
        plans = retention.retention_preview(s, ctx, p, policy_id, vault_id=L.text(vault_id, "vault_id"))
    return {"policy_id": policy_id, "prune_count": sum(len(r.plan.prune_ids) for r in plans),
            "resources": [wire.retention_resp(r) for r in plans]}


@router.post("/policies/{policy_id}/prune")
def prune(policy_id: str, body: wire.PruneBody, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """OpenCBR extension: apply the policy's retention to a vault now (it must be the vault's policy)."""
    with ctx.tx() as s:
        plans = retention.prune_now(s, ctx, p, policy_id, body.vault_id)
    return {"policy_id": policy_id, "deleted_count": sum(len(r.deleted) for r in plans),
            "resources": [wire.retention_resp(r) for r in plans]}
