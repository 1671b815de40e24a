"""CBR v3 vault routes (CBR v3 API 6.1)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from opencbr.api import wire
from opencbr.api.deps import get_ctx, principal
from opencbr.api.routes import common as L
from opencbr.api.routes.common import page
from opencbr.api.routing import JSONRoute, catalog_read
from opencbr.domain import vault as V
from opencbr.services import audit, vaults
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}", route_class=JSONRoute)


@router.post("/vaults")
def create_vault(body: wire.VaultCreateBody, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    spec = wire.dump(body.vault)
    with audit.trace(ctx, p, "createVault", {"name": spec.get("name"), "billing": spec.get("billing")}) as t, \
            ctx.tx() as s:
        view = vaults.create_vault(s, ctx, p, spec)
        t.resource(view.vault.id, view.vault.name)
    return {"vault": wire.vault_resp(view)}


@router.get("/vaults")
@catalog_read
def list_vaults(limit: int | None = None, offset: int | None = None, name: str | None = None,
                cloud_type: str | None = None, protect_type: str | None = None, object_type: str | None = None,
                enterprise_project_id: str | None = None, id: list[str] | None = Query(None),
                policy_id: str | None = None, status: str | None = None, resource_ids: str | None = None,
                sort: str | None = None, start_time: str | None = None, end_time: str | None = None,
                p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """Guide 3.1; the list parameters follow the same rules as on every list (routes/common.py)."""
    limit, offset = page(limit, offset)
    start, end = L.time_window(start_time, end_time)
    f = vaults.VaultFilter(name=L.text(name, "name"), cloud_type=L.choice(cloud_type, "cloud_type", V.CLOUD_TYPES),
                           protect_type=L.choice(protect_type, "protect_type", V.PROTECT_TYPES),
                           object_type=L.choice(object_type, "object_type", V.OBJECT_TYPES),
                           enterprise_project_id=L.text(enterprise_project_id, "enterprise_project_id"),
                           ids=L.texts(id, "id"), policy_id=L.text(policy_id, "policy_id"),
                           status=L.choice(status, "status", V.VAULT_STATUSES),
                           resource_ids=L.texts((resource_ids or "").split(","), "resource_ids"),
                           start_time=start, end_time=end)
    order = L.parse_sort(sort, vaults.SORT_KEYS)
    with ctx.read() as s:
        views, total = vaults.list_vaults(s, p, f, limit=limit, offset=offset, sort=order)
    return {"vaults": [wire.vault_resp(v) for v in views], "count": total, "limit": limit, "offset": offset}


@router.get("/vaults/summary")
def show_summary(p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        size, used = vaults.summary(s, p)
    return {"size": size, "used_size": -(-used // wire.MB)}


@router.get("/vaults/{vault_id}")
@catalog_read
def show_vault(vault_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        view = vaults.show_vault(s, p, vault_id)
    return {"vault": wire.vault_resp(view)}


@router.put("/vaults/{vault_id}")
def update_vault(vault_id: str, body: wire.VaultUpdateBody, p: Principal = Depends(principal),
                 ctx: ServiceContext = Depends(get_ctx)):
    spec = wire.dump(body.vault)
    with audit.trace(ctx, p, "updateVault", spec, resource_id=vault_id) as t, ctx.tx() as s:
        view = vaults.update_vault(s, ctx, p, vault_id, spec)
        t.resource(view.vault.id, view.vault.name)
    return {"vault": wire.vault_resp(view)}


@router.delete("/vaults/{vault_id}")
def delete_vault(vault_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """Starts a ``vault_delete`` task; the body names it (the SDK ignores the body)."""
    with audit.trace(ctx, p, "deleteVault", resource_id=vault_id), ctx.tx() as s:
        task_id = vaults.delete_vault(s, ctx, p, vault_id)
    return {"operation_log_id": task_id}


@router.post("/vaults/{vault_id}/addresources")
def add_resources(vault_id: str, body: wire.AddResourcesBody, p: Principal = Depends(principal),
                  ctx: ServiceContext = Depends(get_ctx)):
    items = [wire.dump(r) for r in body.resources]
    with audit.trace(ctx, p, "addResources", {"resources": [i["id"] for i in items]}, resource_id=vault_id), \
            ctx.tx() as s:
        added = vaults.add_resources(s, ctx, p, vault_id, items)
    return {"add_resource_ids": added}


@router.post("/vaults/{vault_id}/removeresources")
def remove_resources(vault_id: str, body: wire.RemoveResourcesBody, p: Principal = Depends(principal),
                     ctx: ServiceContext = Depends(get_ctx)):
    with audit.trace(ctx, p, "removeResources", {"resource_ids": body.resource_ids}, resource_id=vault_id), \
            ctx.tx() as s:
        removed = vaults.remove_resources(s, ctx, p, vault_id, body.resource_ids)
    return {"remove_resource_ids": removed}
