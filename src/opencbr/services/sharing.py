"""Sharing backups between projects (guide 4.2; the API's members): the sharer shares a server or disk
backup with up to 10 other projects of the region and may cancel a share; a recipient sees the backups
shared with it, accepts one into one of its vaults (where it counts against the capacity) or rejects it,
and creates disks from an accepted one, or an image of an accepted server backup and servers from that
(``services/images.py``).

The data is not copied: a recipient's restores read the sharer's vault (``services/memberships.py``
says why that is safe, and what happens when the sharer deletes the backup). A recipient sees the shared
backup and nothing else of the sharer: not its vault, its resource, its checkpoint or its tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from opencbr.catalog.models import Account, Backup, BackupMember, Project, Resource
from opencbr.domain import resource as R
from opencbr.domain import sharing as S
from opencbr.domain.errors import Forbidden, InvalidParameter, NotFound, StateConflict
from opencbr.services import backups, listing, memberships
from opencbr.services.context import ServiceContext
from opencbr.services.lookups import children, data_backups, get_backup, get_vault
from opencbr.services.principal import Principal

GB = 1024**3
MEMBER_NOT_FOUND = "BackupService.6712"
SORT_KEYS = {"created_at": BackupMember.created_at, "updated_at": BackupMember.updated_at,
             "status": BackupMember.status, "dest_project_id": BackupMember.dest_project_id}


# ------------------------------------------------------------------------------------ the sharer
def add_members(s: Session, ctx: ServiceContext, p: Principal, backup_id: str, project_ids: list[str],
                domains: list[str] | None = None) -> list[BackupMember]:
    """Share a backup with projects (guide 4.2, sharer step 3), named in ``project_ids`` or through their
    accounts in ``domains`` (the API's domain ids; an account's name too, as the guide's console asks
    for). Sharing again with a member changes nothing. Returns the members named."""
    p.require_write()
    b = get_backup(s, p.project_id, backup_id, for_update=True)
    project_ids = list(project_ids) + _account_projects(s, p, domains or [])
    if not project_ids:
        raise InvalidParameter("members or domains must name at least one project or account",
                               code="BackupService.6713")
    S.check_shareable(b.resource_type, b.status, _encrypted(s, b), b.parent_id is not None)
    sharer = s.get(Project, p.project_id)
    existing = {m.dest_project_id: m for m in s.scalars(select(BackupMember).where(BackupMember.backup_id == b.id))}
    wanted = list(dict.fromkeys(project_ids))
    new = [pid for pid in wanted if pid not in existing]
    for pid in new:
        dest = s.get(Project, pid) if isinstance(pid, str) else None
        if dest is None:
            raise NotFound(f"project {pid} not found", code="BackupService.6714")
        S.check_recipient(sharer.id, sharer.region, dest.id, dest.region)
    S.check_member_count(len(existing), len(new))
    now = ctx.now()
    for pid in new:
        existing[pid] = BackupMember(backup_id=b.id, project_id=p.project_id, dest_project_id=pid, status=S.PENDING,
                                     size_bytes=_size(b), created_at=now, updated_at=now)
        s.add(existing[pid])
    s.flush()
    return [existing[pid] for pid in wanted]


def _account_projects(s: Session, p: Principal, domains: object) -> list[str]:
    """Guide 4.2, sharer step 3: the sharer names the recipient's account, and the account's projects (in
    the backup's region) become the members, each counting towards the 10. The sharer's own project is
    left out when it names its own account."""
    if not isinstance(domains, list) or not all(isinstance(d, str) and d for d in domains):
        raise InvalidParameter("domains must be a list of account ids or names", code="BackupService.6718")
    region = s.get(Project, p.project_id).region
    found = []
    for ref in dict.fromkeys(domains):
        account = s.get(Account, ref) or s.scalar(select(Account).where(Account.name == ref))
        if account is None:
            raise NotFound(f"account {ref} not found", code="BackupService.6719")
        projects = list(s.scalars(select(Project.id).where(Project.account_id == account.id, Project.region == region,
                                                           Project.id != p.project_id).order_by(Project.created_at,
                                                                                                Project.id)))
        if not projects:
            raise InvalidParameter(f"account {ref} has no other project in region {region} to share with (guide 4.2: "
                                   "backups are shared within one region)", code="BackupService.6720")
        found += projects
    return found


@dataclass
class MemberFilter:
    dest_project_id: str | None = None
    image_id: str | None = None
    status: str | None = None
    vault_id: str | None = None


def list_members(s: Session, p: Principal, backup_id: str, f: MemberFilter, *, limit: int = 1000, offset: int = 0,
                 sort: listing.Sort | None = None, marker: str | None = None) -> tuple[list[BackupMember], int]:
    """The projects a backup is shared with (the sharer's view; a recipient sees its own membership only,
    with :func:`show_member`)."""
    b = get_backup(s, p.project_id, backup_id)
    conds = [BackupMember.backup_id == b.id]
    for col, val in ((BackupMember.dest_project_id, f.dest_project_id), (BackupMember.image_id, f.image_id),
                     (BackupMember.status, f.status), (BackupMember.vault_id, f.vault_id)):
        if val:
            conds.append(col == val)
    order = listing.order_by(sort, SORT_KEYS, [BackupMember.created_at, BackupMember.id], BackupMember.id)
    rows = list(s.scalars(select(BackupMember).where(and_(*conds)).order_by(*order)))
    if marker:
        ids = [m.dest_project_id for m in rows]
        if marker not in ids:
            raise InvalidParameter(f"marker {marker} is not a member of this list")
        offset += ids.index(marker) + 1
    return rows[offset:offset + limit], len(rows)


def delete_member(s: Session, ctx: ServiceContext, p: Principal, backup_id: str, member_id: str) -> None:
    """Cancel sharing with one project (guide 4.2, "Canceling sharing"): the backup leaves the recipient's
    account and no longer counts against its vault; disks it made from it stay."""
    p.require_write()
    b = get_backup(s, p.project_id, backup_id, for_update=True)
    m = memberships.member_of(s, b.id, member_id, for_update=True)
    if m is None:
        raise NotFound(f"backup {backup_id} is not shared with project {member_id}", code=MEMBER_NOT_FOUND)
    vault_id = m.vault_id
    memberships.images_follow(s, m, None)
    s.delete(m)
    memberships.recount(s, {vault_id})


# ------------------------------------------------------------------------------------ both sides
def show_member(s: Session, p: Principal, backup_id: str, member_id: str) -> BackupMember:
    """One membership: the sharer sees any of its backup's; a recipient its own only."""
    b = s.get(Backup, backup_id) if isinstance(backup_id, str) else None
    mine = memberships.member_of(s, b.id, p.project_id) if b is not None and b.project_id != p.project_id else None
    if b is None or (b.project_id != p.project_id and mine is None):
        raise NotFound(f"backup {backup_id} not found", code="BackupService.6110")
    m = memberships.member_of(s, b.id, member_id) if mine is None else (mine if member_id == p.project_id else None)
    if m is None:
        raise NotFound(f"backup {backup_id} is not shared with project {member_id}", code=MEMBER_NOT_FOUND)
    return m


# ------------------------------------------------------------------------------------ the recipient
def update_member_status(s: Session, ctx: ServiceContext, p: Principal, backup_id: str, member_id: str,
                         status: object, vault_id: object = None) -> BackupMember:
    """The recipient accepts a shared backup into one of its vaults, or rejects it (guide 4.2, recipient
    steps 3-4). Accepting again moves it to another vault; rejecting an accepted one frees its vault."""
    p.require_write()
    b = s.get(Backup, backup_id, with_for_update=True) if isinstance(backup_id, str) else None
    m = memberships.member_of(s, b.id, p.project_id, for_update=True) if b is not None else None
    if m is None:
        raise NotFound(f"backup {backup_id} not found", code="BackupService.6110")
    if member_id != p.project_id:
        raise Forbidden("only the project a backup is shared with accepts or rejects it; the member id is that "
                        "project's id", code="BackupService.6715")
    status = S.check_member_status(status)
    before = m.vault_id
    if status == S.ACCEPTED:
        if not isinstance(vault_id, str) or not vault_id:
            raise InvalidParameter("vault_id is required to accept a shared backup: the vault that will hold it "
                                   "(guide 4.2)", code="BackupService.6716")
        if b.status not in ("available", "restoring"):
            raise StateConflict(f"the shared backup is {b.status}; it cannot be accepted now", code="BackupService.6717")
        vault = get_vault(s, p.project_id, vault_id, for_update=True)
        counted = memberships.counted_bytes(vault) - (m.size_bytes if before == vault.id and
                                                      m.status == S.ACCEPTED else 0)
        S.check_accepting_vault(b.resource_type, vault.object_type, vault.protect_type, vault.status,
                                vault.size_gb * GB - counted, m.size_bytes)
        m.vault_id = vault.id
    else:
        m.vault_id = None
    m.status, m.updated_at = status, ctx.now()
    memberships.images_follow(s, m, m.vault_id)
    memberships.recount(s, {before, m.vault_id})
    return m


@dataclass
class SharedView:
    """A backup as a recipient sees it: the backup, its disks, and the recipient's membership."""

    view: backups.BackupView
    member: BackupMember | None  # None: the project's own backup


def list_backups(s: Session, p: Principal, f: backups.BackupFilter, own_type: object = None,
                 member_status: object = None, **page) -> tuple[list[SharedView], int]:
    """The backup list with ``own_type`` (guide 4.2, "Backups Shared with Me"): ``private`` the project's
    own backups (the default), ``shared`` those shared with it (``member_status`` picks pending, accepted
    or rejected ones), ``all_granted`` both. A shared backup's ``vault_id`` is the recipient's vault that
    accepted it, so filtering by vault finds the shared backups accepted into it."""
    own_type = S.check_own_type(own_type)
    if member_status not in (None, "") and member_status not in S.MEMBER_STATUSES:
        raise InvalidParameter(f"member_status must be one of {', '.join(S.MEMBER_STATUSES)}")
    if own_type == "private":
        views, total = backups.list_backups(s, p, f, **page)
        return [SharedView(v, None) for v in views], total
    granted = select(BackupMember.backup_id).where(BackupMember.dest_project_id == p.project_id)
    if member_status:
        granted = granted.where(BackupMember.status == member_status)
    mine = Backup.project_id == p.project_id
    if f.vault_id:
        granted = granted.where(BackupMember.vault_id == f.vault_id)
        mine = and_(mine, Backup.vault_id == f.vault_id)
    shared = (Backup.parent_id if f.parent_id else Backup.id).in_(granted)
    scope = shared if own_type == "shared" else or_(mine, shared)
    f = backups.BackupFilter(**{**vars(f), "vault_id": None})
    views, total = backups.list_backups(s, p, f, scope=scope, **page)
    return [SharedView(v, _membership(s, p, v.backup)) for v in views], total


def show_backup(s: Session, p: Principal, backup_id: str) -> SharedView:
    """One backup: the project's own, or one shared with it (whatever the recipient answered)."""
    b = s.get(Backup, backup_id) if isinstance(backup_id, str) else None
    if b is not None and b.project_id == p.project_id:
        return SharedView(backups.show_backup(s, p, backup_id), None)
    m = _membership(s, p, b) if b is not None else None
    if m is None:
        raise NotFound(f"backup {backup_id} not found", code="BackupService.6110")
    return SharedView(backups.BackupView(b, children(s, b.id) if b.resource_type == R.SERVER else []), m)


def _membership(s: Session, p: Principal, b: Backup) -> BackupMember | None:
    if b.project_id == p.project_id:
        return None
    return memberships.member_of(s, b.parent_id or b.id, p.project_id)


# ------------------------------------------------------------------------------------ facts
def _encrypted(s: Session, b: Backup) -> bool:
    """Guide 4.2's encrypted backup: one of an encrypted disk (a server's: of any of its disks). Every
    vault's repository is encrypted at rest with keys this installation holds for every project, so that
    alone does not stop a recipient reading it; an encrypted disk's data is the sharer's secret."""
    ids = [x.resource_id for x in data_backups(s, b)] + [b.resource_id]
    return bool(s.scalar(select(func.count()).select_from(Resource).where(Resource.id.in_(ids),
                                                                           Resource.encrypted.is_(True))))


def _size(b: Backup) -> int:
    """A backup's size as a recipient's vault counts it: the data it holds (a disk's size; a server's
    disks' together)."""
    return int(b.logical_bytes or b.resource_size_bytes or 0)
