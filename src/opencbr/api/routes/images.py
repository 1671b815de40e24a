"""The image catalog (OpenCBR's own routes; the CBR v3 API has no image operation: the public service hands
images to another service): full-server images made from server backups, and servers made from them
(guide 6.2, 13.1.4, 13.7.3). docs/images.md describes them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from opencbr.api import wire
from opencbr.api.deps import get_ctx, principal
from opencbr.api.routes import common as L
from opencbr.api.routing import JSONRoute
from opencbr.api.wire import Id, Items, PathText, Text, Wire
from opencbr.catalog.models import Image
from opencbr.services import audit, images
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}", route_class=JSONRoute)


class ImageCreate(Wire):
    backup_id: Id
    name: Text
    description: Text | None = None


class ImageCreateBody(Wire):
    image: ImageCreate


class ServerCreate(Wire):
    name: Text
    paths: Items(PathText, 64) | None = None
    directory: PathText | None = None
    availability_zone: Id | None = None
    power_on: bool = False
    agent_id: Id | None = None


class ServerCreateBody(Wire):
    server: ServerCreate


def image_resp(image: Image) -> dict[str, Any]:
    """An image: its backup, the disks it holds (system disk first) and how many servers were made from it."""
    return {
        "id": image.id, "name": image.name, "description": image.description, "status": image.status,
        "project_id": image.project_id, "region": image.region, "backup_id": image.backup_id,
        "vault_id": image.vault_id, "source_resource_id": image.source_resource_id,
        "source_resource_name": image.source_resource_name, "source_image_type": image.source_image_type,
        "size_bytes": image.size_bytes, "min_disk": -(-image.size_bytes // 1024**3),
        "disks": [dict(d) for d in image.disks or []], "servers_created": image.servers_created,
        "created_at": wire.iso(image.created_at), "updated_at": wire.iso(image.updated_at),
    }


@router.post("/images")
def create_image(body: ImageCreateBody, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    spec = body.image
    with audit.trace(ctx, p, "createImage", wire.dump(spec), resource_id=spec.backup_id) as t, ctx.tx() as s:
        image = images.create_image(s, ctx, p, spec.backup_id, name=spec.name, description=spec.description)
        t.resource(image.id, image.name)
        return {"image": image_resp(image)}


@router.get("/images")
def list_images(limit: int | None = None, offset: int | None = None, name: str | None = None,
                backup_id: str | None = None, sort: str | None = None, p: Principal = Depends(principal),
                ctx: ServiceContext = Depends(get_ctx)):
    limit, offset = L.page(limit, offset)
    order = L.parse_sort(sort, images.SORT_KEYS)
    with ctx.read() as s:
        rows, total = images.list_images(s, p, name=L.text(name, "name"), backup_id=L.text(backup_id, "backup_id"),
                                         limit=limit, offset=offset, sort=order)
        return {"images": [image_resp(i) for i in rows], "count": total}


@router.get("/images/{image_id}")
def show_image(image_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        return {"image": image_resp(images.show_image(s, p, image_id))}


@router.delete("/images/{image_id}", status_code=204)
def delete_image(image_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with audit.trace(ctx, p, "deleteImage", {}, resource_id=image_id) as t, ctx.tx() as s:
        image = images.delete_image(s, ctx, p, image_id)
        t.resource(image.id, image.name)
    return Response(status_code=204)


@router.post("/images/{image_id}/servers", status_code=202)
def create_server(image_id: str, body: ServerCreateBody, p: Principal = Depends(principal),
                  ctx: ServiceContext = Depends(get_ctx)):
    """A new server from the image, as a ``create_server`` task (its progress in the operation logs)."""
    spec = body.server
    with audit.trace(ctx, p, "createServerFromImage", wire.dump(spec), resource_id=image_id), ctx.tx() as s:
        task_id, server_id, disk_ids = images.create_server_from_image(
            s, ctx, p, image_id, name=spec.name, paths=spec.paths, directory=spec.directory,
            az=spec.availability_zone, power_on=spec.power_on, agent_id=spec.agent_id)
    return {"operation_log_id": task_id, "server_id": server_id, "disk_ids": disk_ids}
