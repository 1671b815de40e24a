"""migrate_vault_resource (CBR v3 API 6.1): move resources and their backups to another vault of the
same type; a ``migrate`` task moves the data (services/migration.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from opencbr.api import wire
from opencbr.api.deps import get_ctx, principal
from opencbr.api.routing import JSONRoute
from opencbr.api.wire import Id, Items, Wire
from opencbr.services import audit, migration
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}", route_class=JSONRoute)


class MigrateBody(Wire):
    destination_vault_id: Id
    resource_ids: Items(Id, wire.MAX_RESOURCES, unique=True)


@router.post("/vaults/{vault_id}/migrateresources")
def migrate_vault_resource(vault_id: str, body: MigrateBody, p: Principal = Depends(principal),
                           ctx: ServiceContext = Depends(get_ctx)):
    with audit.trace(ctx, p, "migrateResources", wire.dump(body), resource_id=vault_id), ctx.tx() as s:
        ids, task_id = migration.migrate_resources(s, ctx, p, vault_id, body.destination_vault_id,
                                                   body.resource_ids)
    return {"migrated_resources": ids, "operation_log_id": task_id}  # (extension: the task moving the backups)
