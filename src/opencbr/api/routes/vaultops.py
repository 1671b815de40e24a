"""The rest of the CBR v3 vault API (6.1, 6.3, 6.5, 6.9): batch update, backup expiry, resources' automatic
backups, features, vaults of linked regions, the caller's projects; and the public cloud's billing,
domain-migration and import operations, each answering a 4xx that names why it does not apply here
(docs/api-coverage.md). Included before the vault and backup routers: ``/vaults/batch-update`` and
``/backups/sync`` would otherwise be read as ids."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request

from opencbr.api import wire
from opencbr.api.deps import get_ctx, principal
from opencbr.api.routes import common as L
from opencbr.api.routes.common import page
from opencbr.api.routing import JSONRoute
from opencbr.api.wire import Id, Int, Items, JsonObject, Wire
from opencbr.services import audit, replication, vaultops, vaults
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}", route_class=JSONRoute)
#: The four domain-level operations: no project in the path; the signed X-Project-Id header names it.
domain_router = APIRouter(prefix="/v3", route_class=JSONRoute)


async def header_principal(request: Request) -> Principal:
    return await principal(request, project_id=None)


class VaultBatchUpdate(Wire):
    smn_notify: bool | None = None
    threshold: Int | None = None


class BatchUpdateBody(Wire):
    vault: VaultBatchUpdate


class SetResourcesBody(Wire):
    resource_ids: Items(Id, wire.MAX_RESOURCES, unique=True)
    action: Id


class ExpirationBody(Wire):
    expect_expiration_date: Id
    time_zone: Id | None = None


class VaultOrderBody(Wire):
    vault: wire.VaultCreate


class AnyBody(Wire):
    """The body of an operation that is refused whatever it holds (still bounded in size)."""

    sync: Items(JsonObject, 100) | JsonObject | None = None


# ------------------------------------------------------------------------------------ real meanings
@router.put("/vaults/batch-update")
def batch_update_vaults(body: BatchUpdateBody, p: Principal = Depends(principal),
                        ctx: ServiceContext = Depends(get_ctx)):
    spec = wire.dump(body.vault)
    with audit.trace(ctx, p, "batchUpdateVaults", spec) as t, ctx.tx() as s:
        ids = vaultops.batch_update_vaults(s, ctx, p, spec)
        t.request["updated"] = len(ids)
    return {"updated_vaults_id": ids}


@router.get("/vaults/external")
def list_external_vaults(external_project_id: str | None = None, region_id: str | None = None,
                         limit: int | None = None, offset: int | None = None, protect_type: str | None = None,
                         objcet_type: str | None = None, cloud_type: str | None = None, vault_id: str | None = None,
                         p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    limit, offset = page(limit, offset)
    with ctx.read() as s:
        found = replication.external_vaults(s, ctx, p, region_id, L.text(external_project_id, "external_project_id"))
    found = [v for v in found if (not protect_type or v["protect_type"] == protect_type)
             and (not objcet_type or v["object_type"] == objcet_type) and (not vault_id or v["id"] == vault_id)]
    return {"vaults": [wire.external_vault_resp(v, region_id) for v in found[offset:offset + limit]],
            "count": len(found), "limit": limit, "offset": offset}


@router.post("/vaults/order")
def create_post_paid_vault(body: VaultOrderBody, p: Principal = Depends(principal),
                           ctx: ServiceContext = Depends(get_ctx)):
    """Creates the vault at once, as create_vault does; the answer has the order's shape (no order)."""
    spec = wire.dump(body.vault)
    with audit.trace(ctx, p, "createVault", {"name": spec.get("name"), "billing": spec.get("billing")}) as t, \
            ctx.tx() as s:
        view = vaults.create_vault(s, ctx, p, spec)
        t.resource(view.vault.id, view.vault.name)
    return {"orders": [{"cloudServiceId": view.vault.id, "orderId": "", "subscribeResult": 0,
                        "resourceId": view.vault.id}],
            "retCode": 0, "errText": "", "error_code": "0", "vault": wire.vault_resp(view)}


@router.put("/vaults/{vault_id}/set-resources")
def set_vault_resources(vault_id: str, body: SetResourcesBody, p: Principal = Depends(principal),
                        ctx: ServiceContext = Depends(get_ctx)):
    """``suspend``: the vault's policy no longer backs up these resources; ``unsuspend``: it does again."""
    with audit.trace(ctx, p, "setVaultResources", {"action": body.action, "resource_ids": body.resource_ids},
                     resource_id=vault_id), ctx.tx() as s:
        ids = vaults.set_resources_protection(s, ctx, p, vault_id, body.resource_ids, body.action)
    return {"set_resource_ids": ids}


@router.put("/vaults/{vault_id}/update-backup-expiration-time")
def update_expiration_time(vault_id: str, body: ExpirationBody, p: Principal = Depends(principal),
                           ctx: ServiceContext = Depends(get_ctx)):
    with audit.trace(ctx, p, "updateBackupExpirationTime", wire.dump(body), resource_id=vault_id), \
            ctx.tx() as s:
        count, day, task_id = vaultops.update_expiration_time(s, ctx, p, vault_id, body.expect_expiration_date,
                                                              body.time_zone)
    return {"affected_backups_count": count, "new_expiration_day": day, "operation_log_id": task_id}


@router.get("/cbr-features")
def list_features(limit: int | None = None, offset: int | None = None, p: Principal = Depends(principal),
                  ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        return vaultops.features(s, ctx)


@router.get("/cbr-features/{feature_key}")
def show_feature(feature_key: str, limit: int | None = None, offset: int | None = None,
                 p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        return vaultops.feature(s, ctx, feature_key)


# ------------------------------------------------------------------------------------ documented 4xx
@router.post("/vaults/change-charge-mode")
def change_vault_charge_mode(p: Principal = Depends(principal)):
    vaultops.not_supported(vaultops.NO_BILLING)


@router.post("/orders/change")
def change_order(p: Principal = Depends(principal)):
    vaultops.not_supported(vaultops.NO_BILLING)


@router.put("/orders/{order_id}")
def update_order(order_id: str, p: Principal = Depends(principal)):
    vaultops.not_supported(vaultops.NO_BILLING)


@router.post("/backups/sync")
def import_backup(body: AnyBody, p: Principal = Depends(principal)):
    vaultops.not_supported(vaultops.NO_IMPORT)


@router.post("/checkpoints/sync")
def import_checkpoint(body: AnyBody, p: Principal = Depends(principal)):
    vaultops.not_supported(vaultops.NO_IMPORT)


# ------------------------------------------------------------------------------------ domain level
def _project_resp(project, region: str) -> dict:
    link = {"self": f"/v3/projects/{project.id}"}
    return {"id": project.id, "name": project.name, "domain_id": project.account_id, "enabled": True,
            "is_domain": False, "parent_id": project.account_id, "description": f"region {region}", "links": link}


@domain_router.get("/region-projects")
def list_projects(p: Principal = Depends(header_principal), ctx: ServiceContext = Depends(get_ctx)):
    """The caller's projects (of its account)."""
    with ctx.read() as s:
        projects = vaultops.caller_projects(s, p)
    return {"projects": [_project_resp(x, ctx.settings.region) for x in projects],
            "links": {"self": "/v3/region-projects"}}


@domain_router.get("/domain/{domain_name}/projects")
def list_domain_projects(domain_name: str, p: Principal = Depends(header_principal),
                         ctx: ServiceContext = Depends(get_ctx)):
    """The projects of the caller's account, named by its name or id."""
    with ctx.read() as s:
        projects = vaultops.account_projects(s, p, domain_name)
    return {"projects": [{"project_id": x.id, "project_name": x.name} for x in projects]}


@domain_router.get("/domain/{source_project_id}")
def show_domain(source_project_id: str, p: Principal = Depends(header_principal),
                ctx: ServiceContext = Depends(get_ctx)):
    """The account (the public cloud's domain) a project of the caller's account belongs to."""
    with ctx.read() as s:
        project, account = vaultops.project_domain(s, p, source_project_id)
    return {"project_id": project.id, "project_name": project.name, "domain_id": account.id,
            "domain_name": account.name}


@domain_router.post("/migrates")
def migrate_domain(p: Principal = Depends(header_principal)):
    vaultops.not_supported(vaultops.NO_DOMAIN_MIGRATION)


@domain_router.get("/migrates")
def show_migrate_status(all_regions: bool | None = Query(None), p: Principal = Depends(header_principal)):
    vaultops.not_supported(vaultops.NO_DOMAIN_MIGRATION)

