"""CBR v3 tag routes (CBR v3 API 6.7; note the singular ``vault`` in their paths) and the tags of the
inventory's resources (OpenCBR extension: automatic association picks resources by them)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from opencbr.api import wire
from opencbr.api.deps import get_ctx, principal
from opencbr.api.routing import JSONRoute
from opencbr.api.wire import Id, Items, JsonObject, Text, Wire
from opencbr.services import audit, tags
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}", route_class=JSONRoute)


class TagCreateBody(Wire):
    tag: wire.Tag


class TagsBatchBody(Wire):
    action: Id
    tags: Items(wire.Tag, 100) | None = None
    sys_tags: Items(JsonObject, 10) | None = None


class TagsFilter(Wire):
    key: Text
    values: Items(Text, 100) | None = None


class Match(Wire):
    key: Id
    value: Text | None = None


class ResourceInstancesBody(Wire):
    action: Id
    without_any_tag: bool | None = None
    tags: Items(TagsFilter, 100) | None = None
    tags_any: Items(TagsFilter, 100) | None = None
    not_tags: Items(TagsFilter, 100) | None = None
    not_tags_any: Items(TagsFilter, 100) | None = None
    sys_tags: Items(JsonObject, 10) | None = None
    limit: Id | int | None = None
    offset: Id | int | None = None
    matches: Items(Match, 10) | None = None
    cloud_type: Id | None = None
    object_type: Id | None = None


class ResourceTagsBody(Wire):
    tags: Items(wire.Tag, 100)


@router.post("/vault/{vault_id}/tags", status_code=204)
def create_vault_tag(vault_id: str, body: TagCreateBody, p: Principal = Depends(principal),
                     ctx: ServiceContext = Depends(get_ctx)):
    with audit.trace(ctx, p, "createVaultTag", {"key": body.tag.key}, resource_id=vault_id), ctx.tx() as s:
        tags.create_vault_tag(s, ctx, p, vault_id, wire.dump(body.tag))
    return Response(status_code=204)


@router.get("/vault/tags")
def show_project_tags(p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        return {"tags": tags.project_tags(s, p)}


@router.get("/vault/{vault_id}/tags")
def show_vault_tags(vault_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        return {"tags": tags.show_vault_tags(s, p, vault_id)}


@router.delete("/vault/{vault_id}/tags/{key}", status_code=204)
def delete_vault_tag(vault_id: str, key: str, p: Principal = Depends(principal),
                     ctx: ServiceContext = Depends(get_ctx)):
    with audit.trace(ctx, p, "deleteVaultTag", {"key": key[:64]}, resource_id=vault_id), ctx.tx() as s:
        tags.delete_vault_tag(s, ctx, p, vault_id, key)
    return Response(status_code=204)


@router.post("/vault/{vault_id}/tags/action", status_code=204)
def batch_vault_tags(vault_id: str, body: TagsBatchBody, p: Principal = Depends(principal),
                     ctx: ServiceContext = Depends(get_ctx)):
    spec = body.model_dump(exclude_none=True)
    with audit.trace(ctx, p, "bulkCreateOrDeleteVaultTags", {"action": body.action}, resource_id=vault_id), \
            ctx.tx() as s:
        tags.batch_vault_tags(s, ctx, p, vault_id, body.action, spec.get("tags"), spec.get("sys_tags"))
    return Response(status_code=204)


@router.post("/vault/resource_instances/action")
def resource_instances(body: ResourceInstancesBody, p: Principal = Depends(principal),
                       ctx: ServiceContext = Depends(get_ctx)):
    """Vaults by their tags (``filter``: a page of them with their tags; ``count``: how many)."""
    q = tags.parse_instance_query(body.model_dump(exclude_none=True))
    with ctx.read() as s:
        views, total = tags.resource_instances(s, p, q)
    if q.action == "count":
        return {"total_count": total}
    out: list[dict[str, Any]] = []
    for v in views:
        out.append({"resource_id": v.vault.id, "resource_name": v.vault.name,
                    "resource_detail": {"vault": wire.vault_resp(v)}, "tags": v.vault.tags or []})
    return {"resources": out, "total_count": total}


# ------------------------------------------------------------------------------------ resource tags
@router.get("/inventory/{kind}/{resource_id}/tags")
def show_resource_tags(kind: str, resource_id: str, p: Principal = Depends(principal),
                       ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        return {"tags": tags.show_resource_tags(s, p, resource_id)}


@router.put("/inventory/{kind}/{resource_id}/tags")
def set_resource_tags(kind: str, resource_id: str, body: ResourceTagsBody, p: Principal = Depends(principal),
                      ctx: ServiceContext = Depends(get_ctx)):
    """Replace the tags of a disk, server or file system (``[]`` removes them)."""
    with audit.trace(ctx, p, "setResourceTags", {"tags": len(body.tags)}, resource_id=resource_id), \
            ctx.tx() as s:
        return {"tags": tags.set_resource_tags(s, ctx, p, resource_id, [wire.dump(t) for t in body.tags])}
