"""Tags of vaults (the CBR tag API) and of resources (OpenCBR's inventory; automatic association picks
resources by them). Rules in ``domain.tags``.

Vault tags stay in the vault's ``tags`` JSON column (what the vault answers carry): at most 10 per vault,
and the queries over them (the project's tags, the resource-instances filter) read one project's vaults
(id, name, types, tags) and filter in Python. A project holds tens to hundreds of vaults, so a separate
tag table with its own index would buy nothing measurable and cost a second copy to keep in step."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencbr.catalog.models import Resource, Vault
from opencbr.domain import tags as T
from opencbr.domain.errors import InvalidParameter, NotFound
from opencbr.services import resources as res_svc
from opencbr.services import vaults
from opencbr.services.context import ServiceContext
from opencbr.services.lookups import get_vault
from opencbr.services.principal import Principal

#: ``sys_tags`` (the enterprise-project system tag) are for the public cloud's tag service account.
SYS_TAGS_UNSUPPORTED = ("sys_tags are written by the public cloud's tag management service (op_service); "
                        "this installation has no such service, so they are not accepted")


# ------------------------------------------------------------------------------------ vault tags
def show_vault_tags(s: Session, p: Principal, vault_id: str) -> list[dict[str, str]]:
    return list(get_vault(s, p.project_id, vault_id).tags or [])


def create_vault_tag(s: Session, ctx: ServiceContext, p: Principal, vault_id: str, tag: object) -> None:
    """Add one tag; a key the vault has already takes the new value."""
    p.require_write()
    [checked] = T.check_tag_list([tag], what="tag")
    vault = get_vault(s, p.project_id, vault_id, for_update=True)
    _store(vault, ctx, T.merged(vault.tags, [checked]))


def delete_vault_tag(s: Session, ctx: ServiceContext, p: Principal, vault_id: str, key: str) -> None:
    p.require_write()
    vault = get_vault(s, p.project_id, vault_id, for_update=True)
    if not any(t["key"] == key for t in vault.tags or []):
        raise NotFound(f"vault {vault_id} has no tag with key {key[:64]!r}", code="BackupService.6230")
    _store(vault, ctx, T.without(vault.tags, [key]))


def batch_vault_tags(s: Session, ctx: ServiceContext, p: Principal, vault_id: str, action: object,
                     tags: object, sys_tags: object = None) -> None:
    """``create``: add or overwrite every tag (duplicate keys in the request are refused, at most 10 in
    all); ``delete``: remove the keys given (absent keys are no error)."""
    p.require_write()
    if sys_tags:
        raise InvalidParameter(SYS_TAGS_UNSUPPORTED, code="BackupService.6231")
    if action not in ("create", "delete"):
        raise InvalidParameter("action must be create or delete", code=T.CODE)
    vault = get_vault(s, p.project_id, vault_id, for_update=True)
    if action == "create":
        _store(vault, ctx, T.merged(vault.tags, T.check_tag_list(tags)))
    else:
        _store(vault, ctx, T.without(vault.tags, T.delete_keys(tags)))


def _store(vault: Vault, ctx: ServiceContext, tags: list[dict[str, str]]) -> None:
    vault.tags = tags  # a new list: the JSON column sees the change
    vault.updated_at = ctx.now()


def project_tags(s: Session, p: Principal) -> list[dict]:
    """Every tag key on the project's vaults with the values it has, sorted."""
    values: dict[str, set[str]] = {}
    for (tags,) in s.execute(select(Vault.tags).where(Vault.project_id == p.project_id)):
        for t in tags or []:
            values.setdefault(t["key"], set()).add(t.get("value", ""))
    return [{"key": k, "values": sorted(v)} for k, v in sorted(values.items())]


# ------------------------------------------------------------------------------------ resource instances
@dataclass
class InstanceQuery:
    action: str
    tag_filter: T.TagFilter
    limit: int
    offset: int
    cloud_type: str | None = None
    object_type: str | None = None


def parse_instance_query(body: dict) -> InstanceQuery:
    """The VaultResourceInstancesReq body: ``action`` filter (a page) or count; ``limit`` 1-1000
    (default 1000) and ``offset`` (default 0), strings as the SDK sends them."""
    action = body.get("action")
    if action not in ("filter", "count"):
        raise InvalidParameter("action must be filter or count", code=T.CODE)
    if body.get("sys_tags"):
        raise InvalidParameter(SYS_TAGS_UNSUPPORTED, code="BackupService.6231")
    limit, offset = _int(body.get("limit"), "limit", 1000), _int(body.get("offset"), "offset", 0)
    if action == "filter" and not 1 <= limit <= 1000:
        raise InvalidParameter("limit must be from 1 to 1000", code=T.CODE)
    if offset < 0:
        raise InvalidParameter("offset must be 0 or more", code=T.CODE)
    matches = body.get("matches") or []
    name = None
    if matches:
        if not isinstance(matches, list) or len(matches) > 1 or not isinstance(matches[0], dict) \
                or matches[0].get("key") != "resource_name" or not isinstance(matches[0].get("value", ""), str):
            raise InvalidParameter("matches holds one condition, with key resource_name", code=T.CODE)
        name = matches[0].get("value", "")[:255]
    f = T.TagFilter(tags=T.check_filter_tags(body.get("tags"), "tags"),
                    tags_any=T.check_filter_tags(body.get("tags_any"), "tags_any"),
                    not_tags=T.check_filter_tags(body.get("not_tags"), "not_tags"),
                    not_tags_any=T.check_filter_tags(body.get("not_tags_any"), "not_tags_any"),
                    without_any_tag=bool(body.get("without_any_tag")), name=name)
    return InstanceQuery(action, f, limit, offset, body.get("cloud_type"), body.get("object_type"))


def _int(value: object, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise InvalidParameter(f"{name} must be a whole number", code=T.CODE)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise InvalidParameter(f"{name} must be a whole number", code=T.CODE) from None


def resource_instances(s: Session, p: Principal, q: InstanceQuery) -> tuple[list[vaults.VaultView], int]:
    """The vaults matching the query (a page of them for ``filter``, none for ``count``) and how many
    match, oldest first."""
    rows = s.execute(select(Vault.id, Vault.name, Vault.tags, Vault.cloud_type, Vault.object_type)
                     .where(Vault.project_id == p.project_id).order_by(Vault.created_at, Vault.id)).all()
    ids = [vid for vid, name, tags, cloud, obj in rows
           if (not q.cloud_type or cloud == q.cloud_type) and (not q.object_type or obj == q.object_type)
           and q.tag_filter.matches(name, tags)]
    if q.action == "count" or not ids:
        return [], len(ids)
    page = ids[q.offset:q.offset + q.limit]
    if not page:
        return [], len(ids)
    views, _ = vaults.list_vaults(s, p, vaults.VaultFilter(ids=page), limit=len(page))
    by_id = {v.vault.id: v for v in views}
    return [by_id[i] for i in page if i in by_id], len(ids)


# ------------------------------------------------------------------------------------ resource tags
def show_resource_tags(s: Session, p: Principal, resource_id: str) -> list[dict[str, str]]:
    return list(res_svc.get_resource(s, p.project_id, resource_id).tags or [])


def set_resource_tags(s: Session, ctx: ServiceContext, p: Principal, resource_id: str,
                      tags: object) -> list[dict[str, str]]:
    """Replace a resource's tags (an empty list removes them all); the same rules as a vault's."""
    p.require_write()
    res: Resource = res_svc.get_resource(s, p.project_id, resource_id)
    res.tags = [] if tags == [] else T.check_tag_list(tags)
    res.updated_at = ctx.now()
    return list(res.tags)
