"""Protectables (CBR v3 API 6.2) and the inventory of the local provider (OpenCBR extension,
documented in docs/api-inventory.md)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from sqlalchemy.orm import Session

from opencbr.api import wire
from opencbr.api.deps import get_ctx, principal
from opencbr.api.routes import common as L
from opencbr.api.routes.common import page
from opencbr.api.routing import JSONRoute
from opencbr.domain import resource as R
from opencbr.domain.errors import InvalidParameter
from opencbr.services import resources, vaults
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}", route_class=JSONRoute)


def _protectable(s: Session, p: Principal, view: resources.ResourceView) -> dict:
    vault_view = vaults.show_vault(s, p, view.vault.id) if view.vault else None
    return wire.protectable_resp(view, vault_view)


#: The status filter of each resource type (servers also by the names the protectables API shows).
_STATUSES = {R.DISK: R.DISK_STATUSES, R.FILE_SYSTEM: R.FS_STATUSES,
             R.SERVER: R.SERVER_STATUSES + tuple(R.SERVER_API_STATUS.values())}


#: The official API's names of the protectable types (the SDK's ``ShowProtectableRequest``: server, disk,
#: turbo), beside the resource types themselves.
_PROTECTABLE_TYPES = {"server": R.SERVER, "disk": R.DISK, "turbo": R.FILE_SYSTEM}


def _protectable_type(protectable_type: str) -> str:
    return R.check_resource_type(_PROTECTABLE_TYPES.get(protectable_type, protectable_type))


@router.get("/protectables/{protectable_type}/instances")
def list_protectable(protectable_type: str, limit: int | None = None, offset: int | None = None,
                     marker: str | None = None, name: str | None = None, status: str | None = None,
                     id: str | None = None, server_id: str | None = None, sort: str | None = None,
                     p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """Resources of one type that can be protected, with whether each can be associated now. The list
    parameters follow the same rules as on every list (routes/common.py)."""
    protectable_type = _protectable_type(protectable_type)
    limit, offset = page(limit, offset, default=50, maximum=50)
    id = L.text(id, "id")
    status = L.choice(status, "status", _STATUSES[protectable_type])
    order = L.parse_sort(sort, resources.SORT_KEYS)
    with ctx.read() as s:
        views, _ = resources.list_resources(s, p, rtype=protectable_type, name=L.text(name, "name"), status=status,
                                            ids=[id] if id else None, server_id=L.text(server_id, "server_id"),
                                            sort=order)
        if L.text(marker, "marker"):
            ids = [v.resource.id for v in views]
            if marker not in ids:
                raise InvalidParameter(f"marker {marker} is not a resource of this list")
            views = views[ids.index(marker) + 1:]
        return {"instances": [_protectable(s, p, v) for v in views[offset:offset + limit]]}


@router.get("/protectables/{protectable_type}/instances/{instance_id}")
def show_protectable(protectable_type: str, instance_id: str, p: Principal = Depends(principal),
                     ctx: ServiceContext = Depends(get_ctx)):
    protectable_type = _protectable_type(protectable_type)
    with ctx.read() as s:
        return {"instance": _protectable(s, p, resources.show_resource(s, p, instance_id, protectable_type))}


# ------------------------------------------------------------------------------------ inventory
_KINDS = {"disks": R.DISK, "servers": R.SERVER, "file-systems": R.FILE_SYSTEM}


def _kind(kind: str) -> str:
    if kind not in _KINDS:
        raise InvalidParameter(f"unknown inventory kind {kind!r}; use disks, servers or file-systems")
    return _KINDS[kind]


@router.post("/inventory/disks")
def register_disk(body: wire.DiskRegister, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.tx() as s:
        res = resources.register_disk(s, ctx, p, name=body.name, path=body.path, az=body.availability_zone,
                                      encrypted=body.encrypted, description=body.description or "", host=body.host)
    with ctx.read() as s:
        return {"disk": wire.inventory_resp(resources.show_resource(s, p, res.id))}


@router.post("/inventory/servers")
def register_server(body: wire.ServerRegister, p: Principal = Depends(principal),
                    ctx: ServiceContext = Depends(get_ctx)):
    with ctx.tx() as s:
        res = resources.register_server(s, ctx, p, name=body.name, system_disk=body.system_disk,
                                        data_disks=body.data_disks, az=body.availability_zone, status=body.status,
                                        description=body.description or "")
    with ctx.read() as s:
        return {"server": wire.inventory_resp(resources.show_resource(s, p, res.id))}


@router.post("/inventory/file-systems")
def register_file_system(body: wire.FileSystemRegister, p: Principal = Depends(principal),
                         ctx: ServiceContext = Depends(get_ctx)):
    with ctx.tx() as s:
        res = resources.register_file_system(s, ctx, p, name=body.name, path=body.path, az=body.availability_zone,
                                             description=body.description or "", host=body.host)
    with ctx.read() as s:
        return {"file_system": wire.inventory_resp(resources.show_resource(s, p, res.id))}


@router.get("/inventory/{kind}")
def list_inventory(kind: str, limit: int | None = None, offset: int | None = None, name: str | None = None,
                   status: str | None = None, sort: str | None = None, p: Principal = Depends(principal),
                   ctx: ServiceContext = Depends(get_ctx)):
    """The list parameters follow the same rules as on every list (routes/common.py)."""
    limit, offset = page(limit, offset)
    rtype = _kind(kind)
    status = L.choice(status, "status", _STATUSES[rtype])
    order = L.parse_sort(sort, resources.SORT_KEYS)
    with ctx.read() as s:
        views, total = resources.list_resources(s, p, rtype=rtype, name=L.text(name, "name"), status=status,
                                                limit=limit, offset=offset, sort=order)
    return {"resources": [wire.inventory_resp(v) for v in views], "count": total, "limit": limit, "offset": offset}


@router.get("/inventory/{kind}/{resource_id}")
def show_inventory(kind: str, resource_id: str, p: Principal = Depends(principal),
                   ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        return {"resource": wire.inventory_resp(resources.show_resource(s, p, resource_id, _kind(kind)))}


@router.put("/inventory/servers/{server_id}")
def update_server(server_id: str, body: wire.ServerStatusUpdate, p: Principal = Depends(principal),
                  ctx: ServiceContext = Depends(get_ctx)):
    with ctx.tx() as s:
        resources.set_server_status(s, ctx, p, server_id, body.status)
    with ctx.read() as s:
        return {"server": wire.inventory_resp(resources.show_resource(s, p, server_id, R.SERVER))}


@router.delete("/inventory/{kind}/{resource_id}")
def remove_inventory(kind: str, resource_id: str, p: Principal = Depends(principal),
                     ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        resources.show_resource(s, p, resource_id, _kind(kind))
    with ctx.tx() as s:
        resources.remove_resource(s, p, resource_id)
    return Response(status_code=204)
