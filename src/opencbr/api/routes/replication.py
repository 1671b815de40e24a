"""Cross-region replication (CBR v3 API: copy_backup, copy_checkpoint, show_replication_capabilities;
guide 3.6, 4.4). The work runs as ``replication`` tasks on workers (services/replication.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from opencbr.api.deps import get_ctx, principal
from opencbr.api.routing import JSONRoute
from opencbr.api.wire import JsonObject, Wire
from opencbr.services import audit, replication
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}", route_class=JSONRoute)


class ReplicateBody(Wire):
    replicate: JsonObject | None = None


@router.get("/replication-capabilities")
def show_replication_capabilities(p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        return replication.capabilities(s, ctx)


@router.post("/backups/{backup_id}/replicate")
def copy_backup(backup_id: str, body: ReplicateBody, p: Principal = Depends(principal),
                ctx: ServiceContext = Depends(get_ctx)):
    spec = body.replicate or {}
    with audit.trace(ctx, p, "replicationBackup", dict(spec), resource_id=backup_id), ctx.tx() as s:
        out = replication.copy_backup(s, ctx, p, backup_id, body.replicate)
    return {"replication": out}


@router.post("/checkpoints/replicate")
def copy_checkpoint(body: ReplicateBody, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    spec = body.replicate or {}
    with audit.trace(ctx, p, "replicationCheckpoint", dict(spec), resource_id=str(spec.get("vault_id", ""))), \
            ctx.tx() as s:
        out = replication.copy_checkpoint(s, ctx, p, body.replicate)
    return {"replication": out}
