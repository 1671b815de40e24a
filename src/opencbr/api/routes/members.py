"""CBR v3 sharing routes (CBR v3 API 6.6, guide 4.2): a backup's members. The sharer adds, lists and
deletes them; the project a backup is shared with reads and updates its own membership (accept into a
vault, or reject). A member's id is that project's id."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response

from opencbr.api import wire
from opencbr.api.deps import get_ctx, principal
from opencbr.api.routes import common as L
from opencbr.api.routes.common import page
from opencbr.api.routing import JSONRoute, catalog_read
from opencbr.domain import sharing as S
from opencbr.domain.errors import InvalidParameter
from opencbr.services import audit, sharing
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}", route_class=JSONRoute)


@router.post("/backups/{backup_id}/members")
def add_member(backup_id: str, body: wire.MembersAdd, p: Principal = Depends(principal),
               ctx: ServiceContext = Depends(get_ctx)):
    """Share a backup with projects, named or through their accounts (at most 10 in all)."""
    with audit.trace(ctx, p, "addMember", {"members": body.members or [], "domains": body.domains or []},
                     resource_id=backup_id), \
            ctx.tx() as s:
        members = sharing.add_members(s, ctx, p, backup_id, body.members or [], body.domains)
        return {"members": [wire.member_resp(m) for m in members]}


@router.get("/backups/{backup_id}/members")
@catalog_read
def show_members_detail(backup_id: str, dest_project_id: str | None = None, image_id: str | None = None,
                        status: str | None = None, vault_id: str | None = None, limit: int | None = None,
                        offset: int | None = None, marker: str | None = None, sort: str | None = None,
                        p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    limit, offset = page(limit, offset)
    order = L.parse_sort(sort, sharing.SORT_KEYS)
    if status not in (None, "") and status not in S.MEMBER_STATUSES:
        raise InvalidParameter(f"status must be one of {', '.join(S.MEMBER_STATUSES)}")
    f = sharing.MemberFilter(dest_project_id=L.text(dest_project_id, "dest_project_id"),
                             image_id=L.text(image_id, "image_id"), status=status or None,
                             vault_id=L.text(vault_id, "vault_id"))
    with ctx.read() as s:
        rows, total = sharing.list_members(s, p, backup_id, f, limit=limit, offset=offset, sort=order,
                                           marker=L.text(marker, "marker"))
        return {"members": [wire.member_resp(m) for m in rows], "count": total}


@router.get("/backups/{backup_id}/members/{member_id}")
@catalog_read
def show_member_detail(backup_id: str, member_id: str, p: Principal = Depends(principal),
                       ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        return {"member": wire.member_resp(sharing.show_member(s, p, backup_id, member_id))}


@router.put("/backups/{backup_id}/members/{member_id}")
def update_member_status(backup_id: str, member_id: str, body: wire.MemberUpdate,
                         p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """The recipient accepts the backup into one of its vaults (``vault_id``), or rejects it."""
    with audit.trace(ctx, p, "updateMemberStatus", {"status": body.status, "vault_id": body.vault_id},
                     resource_id=backup_id), ctx.tx() as s:
        m = sharing.update_member_status(s, ctx, p, backup_id, member_id, body.status, body.vault_id)
        return {"member": wire.member_resp(m)}


@router.delete("/backups/{backup_id}/members/{member_id}", status_code=204)
def delete_member(backup_id: str, member_id: str, p: Principal = Depends(principal),
                  ctx: ServiceContext = Depends(get_ctx)):
    """Cancel sharing with one project."""
    with audit.trace(ctx, p, "deleteMember", {"member_id": member_id[:64]}, resource_id=backup_id), ctx.tx() as s:
        sharing.delete_member(s, ctx, p, backup_id, member_id)
    return Response(status_code=204)
