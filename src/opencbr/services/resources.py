"""The resource inventory: register, list, show and remove disks, servers and file systems, and
the CBR ``protectables`` view of them (DESIGN.md section 2: resources come from providers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from opencbr.catalog.models import Resource, User, Vault, VaultResource
from opencbr.domain import resource as R
from opencbr.domain.errors import Forbidden, InvalidParameter, NotFound, StateConflict
from opencbr.providers import local
from opencbr.services import tasks
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal


# ------------------------------------------------------------------------------------ queries
def get_resource(s: Session, project_id: str, resource_id: str, rtype: str | None = None) -> Resource:
    """A resource of the project, or 404 (another project's resource is reported as not found)."""
    res = s.get(Resource, resource_id) if isinstance(resource_id, str) else None
    if res is None or res.project_id != project_id or (rtype and res.type != rtype):
        kind = {R.DISK: "disk", R.SERVER: "server", R.FILE_SYSTEM: "file system"}.get(rtype or "", "resource")
        raise NotFound(f"{kind} {resource_id} not found", code="BackupService.6104")
    return res


def server_disks(s: Session, server_id: str) -> list[Resource]:
    """The disks of a server: the system disk first, then data disks in attachment order."""
    disks = s.scalars(select(Resource).where(Resource.server_id == server_id))
    return sorted(disks, key=lambda d: (d.disk_role != "system", d.device_index or 0))


def live_status(s: Session, res: Resource) -> str:
    """The status of a resource as it is now: a disk whose file vanished or a directory that is gone is
    in error; a server with a missing disk is faulty."""
    if res.type == R.DISK:
        return res.status if local.disk_present(res.path) else "error"
    if res.type == R.FILE_SYSTEM:
        return res.status if local.directory_present(res.path) else "error"
    if res.status != "faulty" and any(not local.disk_present(d.path) for d in server_disks(s, res.id)):
        return "faulty"
    return res.status


def resource_state(s: Session, res: Resource) -> R.ResourceState:
    disks = server_disks(s, res.id) if res.type == R.SERVER else []
    size = sum(d.size_bytes for d in disks) if res.type == R.SERVER else res.size_bytes
    encrypted = any(d.encrypted for d in disks) if res.type == R.SERVER else res.encrypted
    return R.ResourceState(res.id, res.type, res.name, live_status(s, res), res.region, size, encrypted, len(disks))


# ------------------------------------------------------------------------------------ host paths
def check_host_path(ctx: ServiceContext, p: Principal, path: str) -> None:
    """Which paths of the service's machine a tenant may name (to register a disk or file system, or to
    restore into): the service reads and writes them with its own rights, so another tenant's disk, or
    ``/etc``, must be out of reach. With ``resource_roots`` set, every path must lie below one of them;
    without, only the operator's own account may name paths (a single-owner installation)."""
    roots = ctx.settings.resource_roots
    if roots:
        local.check_allowed(path, roots)
        return
    with ctx.tx() as s:
        operator_account = s.scalar(select(User.id).where(User.account_id == p.account_id,
                                                          User.is_operator.is_(True)).limit(1))
    if operator_account is None:
        raise Forbidden("this installation lets tenants use no paths of its machines: the operator must set "
                        "resource_roots (the directories tenants' disks and file systems may live in)",
                        code="APIGW.0306")


# ------------------------------------------------------------------------------------ registration
def _check_az(ctx: ServiceContext, az: str | None) -> str:
    azs = ctx.settings.availability_zones
    if not az:
        return azs[0]
    if az not in azs:
        raise InvalidParameter(f"availability zone {az!r} does not exist; choose one of {', '.join(azs)}")
    return az


def _check_path_free(s: Session, path: str) -> None:
    """A disk or directory belongs to one resource of one project: registering another tenant's disk
    would hand its data to a stranger."""
    if s.scalar(select(Resource.id).where(Resource.path == path)) is not None:
        raise StateConflict(f"{path} is already registered as a resource", code="BackupService.6105")


def register_disk(ctx: ServiceContext, p: Principal, *, name: str, path: str, az: str | None = None,
                  encrypted: bool = False, description: str = "") -> Resource:
    p.require_write()
    R.check_resource_name(name)
    probe = local.probe_disk(path)
    check_host_path(ctx, p, probe.path)
    with ctx.tx() as s:
        _check_path_free(s, probe.path)
        res = Resource(project_id=p.project_id, type=R.DISK, name=name, path=probe.path,
                       size_bytes=probe.size_bytes, region=ctx.settings.region,
                       availability_zone=_check_az(ctx, az), encrypted=bool(encrypted), status="available",
                       description=description or "")
        s.add(res)
    return res


def register_file_system(ctx: ServiceContext, p: Principal, *, name: str, path: str, az: str | None = None,
                         description: str = "") -> Resource:
    p.require_write()
    R.check_resource_name(name)
    real, size = local.probe_directory(path)
    check_host_path(ctx, p, real)
    with ctx.tx() as s:
        _check_path_free(s, real)
        res = Resource(project_id=p.project_id, type=R.FILE_SYSTEM, name=name, path=real, size_bytes=size,
                       region=ctx.settings.region, availability_zone=_check_az(ctx, az), status="available",
                       description=description or "")
        s.add(res)
    return res


def register_server(ctx: ServiceContext, p: Principal, *, name: str, system_disk: str,
                    data_disks: list[str] | None = None, az: str | None = None, status: str = "running",
                    description: str = "") -> Resource:
    """A server is a system disk plus data disks, all registered disks of the project that are not
    attached elsewhere and are in the server's AZ. Attaching makes them ``in-use``."""
    p.require_write()
    R.check_resource_name(name)
    if status not in ("running", "stopped"):
        raise InvalidParameter("a new server is running or stopped")
    data_disks = list(data_disks or [])
    ids = [system_disk, *data_disks]
    if len(set(ids)) != len(ids):
        raise InvalidParameter("a disk can be attached to a server only once")
    with ctx.tx() as s:
        disks = [get_resource(s, p.project_id, d, R.DISK) for d in ids]
        zone = _check_az(ctx, az or disks[0].availability_zone)
        for d in disks:
            if d.server_id is not None:
                raise StateConflict(f"disk {d.name} ({d.id}) is already attached to a server",
                                    code="BackupService.6106")
            if d.availability_zone != zone:
                raise InvalidParameter(f"disk {d.name} is in {d.availability_zone}; the server is in {zone}")
        server = Resource(project_id=p.project_id, type=R.SERVER, name=name, region=ctx.settings.region,
                          availability_zone=zone, status=status, description=description or "")
        s.add(server)
        s.flush()
        for i, d in enumerate(disks):
            d.server_id = server.id
            d.disk_role = "system" if i == 0 else "data"
            d.device_index = i
            d.status = "in-use"
        server.size_bytes = sum(d.size_bytes for d in disks)
    return server


def set_server_status(ctx: ServiceContext, p: Principal, server_id: str, status: str) -> Resource:
    """Start or stop a server (the local provider keeps the power state in the catalog)."""
    p.require_write()
    if status not in R.SERVER_STATUSES:
        raise InvalidParameter(f"server status must be one of {', '.join(R.SERVER_STATUSES)}")
    with ctx.tx() as s:
        server = get_resource(s, p.project_id, server_id, R.SERVER)
        server.status = status
    return server


def remove_resource(ctx: ServiceContext, p: Principal, resource_id: str) -> None:
    """Remove a resource from the inventory (the files stay where they are). Its backups are kept
    (guide 13.2.9); its vault association goes. A disk attached to a server is removed with the
    server, not alone; removing a server detaches its disks."""
    p.require_write()
    with ctx.tx() as s:
        res = get_resource(s, p.project_id, resource_id)
        if res.type == R.DISK and res.server_id is not None:
            raise StateConflict(f"disk {res.name} is attached to a server; remove the server first",
                                code="BackupService.6107")
        if res.type == R.SERVER:
            for d in server_disks(s, res.id):
                d.server_id, d.disk_role, d.device_index, d.status = None, None, None, "available"
        for binding in s.scalars(select(VaultResource).where(VaultResource.resource_id == res.id)):
            s.delete(binding)
        s.delete(res)


def refresh_size(ctx: ServiceContext, res: Resource) -> int:
    """Re-read a disk's or file system's real size (it may have grown since registration)."""
    if res.type == R.DISK:
        return local.probe_disk(res.path).size_bytes
    if res.type == R.FILE_SYSTEM:
        return local.probe_directory(res.path)[1]
    return res.size_bytes


# ------------------------------------------------------------------------------------ listing
@dataclass
class ResourceView:
    """A resource with what the API and CLI show about it."""

    resource: Resource
    status: str
    disks: list[Resource]
    vault: Vault | None


def _view(s: Session, res: Resource) -> ResourceView:
    disks = server_disks(s, res.id) if res.type == R.SERVER else []
    # A disk of a protected server is protected through the server: it shows the server's vault.
    owners = [res.id] + ([res.server_id] if res.type == R.DISK and res.server_id else [])
    bound = {vr.resource_id: vr.vault_id for vr in s.scalars(select(VaultResource)
                                                            .where(VaultResource.resource_id.in_(owners)))}
    vault_id = next((bound[o] for o in owners if o in bound), None)
    return ResourceView(res, live_status(s, res), disks, s.get(Vault, vault_id) if vault_id else None)


def list_resources(ctx: ServiceContext, p: Principal, *, rtype: str | None = None, name: str | None = None,
                   status: str | None = None, ids: list[str] | None = None, server_id: str | None = None,
                   limit: int | None = None, offset: int = 0) -> tuple[list[ResourceView], int]:
    with ctx.tx() as s:
        q = select(Resource).where(Resource.project_id == p.project_id)
        if rtype:
            q = q.where(Resource.type == R.check_resource_type(rtype))
        if name:
            q = q.where(Resource.name.contains(name))
        if ids:
            q = q.where(Resource.id.in_(ids))
        if server_id:
            q = q.where(Resource.server_id == server_id)
        rows = list(s.scalars(q.order_by(Resource.created_at, Resource.id)))
        views = [_view(s, r) for r in rows]
        if status:
            views = [v for v in views if v.status == status or R.SERVER_API_STATUS.get(v.status) == status]
        total = len(views)
        end = None if limit is None else offset + limit
        return views[offset:end], total


def show_resource(ctx: ServiceContext, p: Principal, resource_id: str, rtype: str | None = None) -> ResourceView:
    with ctx.tx() as s:
        return _view(s, get_resource(s, p.project_id, resource_id, rtype))


def count_bindings(s: Session, vault_id: str) -> int:
    return s.scalar(select(func.count()).select_from(VaultResource).where(VaultResource.vault_id == vault_id)) or 0


@contextmanager
def made_from_backup(ctx: ServiceContext, run: tasks.TaskRun, resource_id: str, *, size: Callable[[], int],
                     remove: Callable[[], None]) -> Iterator[None]:
    """The task body that fills a resource created from a backup (a new disk, guide 6.4; a new file
    system, 6.5). If it fails or is cancelled, the half-made resource is deleted and ``remove()`` takes
    its data away; if it succeeds, the resource becomes available with its real ``size()``."""
    from opencbr.engine import OperationCancelled

    try:
        yield
    except BaseException as e:
        with ctx.tx() as s:
            row = s.get(Resource, resource_id)
            if row is not None:
                s.delete(row)
        remove()
        if isinstance(e, OperationCancelled):
            raise tasks.TaskCancelled(run.task_id) from None
        raise
    with ctx.tx() as s:
        row = s.get(Resource, resource_id)
        row.status, row.size_bytes = "available", size()
