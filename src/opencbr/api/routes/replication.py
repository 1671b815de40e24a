"""Cross-region replication (CBR v3 API: copy_backup, copy_checkpoint, show_replication_capabilities;
guide 3.6, 4.4). The work runs as ``replication`` tasks on workers (services/replication.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from opencbr.api.deps import get_ctx, principal
from opencbr.api.routing import JSONRoute
from opencbr.api.wire import JsonObject, Wire
from opencbr.services import audit, regions, replication
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


# ------------------------------------------------------------------------------------ region links (operator)
class CredentialBody(Wire):
    name: str
    account_map: JsonObject | None = None


class RegionBody(Wire):
    name: str
    endpoint: str
    credential: str


def _region_wire(r) -> dict:
    return {"name": r.name, "endpoint": r.endpoint, "credential_id": r.credential_id, "fingerprint": r.fingerprint,
            "created_at": r.created_at.isoformat()}


@router.post("/regions/credentials")
def create_region_credential(body: CredentialBody, p: Principal = Depends(principal),
                             ctx: ServiceContext = Depends(get_ctx)):
    """A link credential for a source region (shown once), for ``cbr admin region add`` there."""
    p.require_operator()
    with ctx.tx() as s:
        c = regions.issue_credential(s, ctx, body.name, body.account_map)
    return {"credential": {"id": c.id, "token": c.token, "fingerprint": c.fingerprint,
                           "replication_listen": ctx.settings.replication_listen}}


@router.delete("/regions/credentials/{credential_id}")
def revoke_region_credential(credential_id: str, p: Principal = Depends(principal),
                             ctx: ServiceContext = Depends(get_ctx)):
    p.require_operator()
    with ctx.tx() as s:
        regions.revoke_credential(s, ctx, credential_id)
    return {"revoked": credential_id}


@router.get("/regions")
def list_regions(p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    p.require_operator()
    with ctx.read() as s:
        return {"regions": [_region_wire(r) for r in regions.list_regions(s)],
                "credentials": [{"id": c.id, "name": c.name, "account_map": c.account_map,
                                 "created_at": c.created_at.isoformat(),
                                 "revoked_at": c.revoked_at.isoformat() if c.revoked_at else None}
                                for c in regions.list_credentials(s)]}


@router.post("/regions")
def add_region(body: RegionBody, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    p.require_operator()
    with ctx.tx() as s:
        r = regions.add_region(s, ctx, body.name, body.endpoint, body.credential)
        out = _region_wire(r)
    return {"region": out}


@router.delete("/regions/{name}")
def remove_region(name: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    p.require_operator()
    with ctx.tx() as s:
        regions.remove_region(s, name)
    return {"removed": name}
