"""The resource inventory: register, list, show and remove disks, servers and file systems, and
the CBR ``protectables`` view of them (docs/design.md: resources come from providers)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from opencbr.catalog.models import Backup, Project, Resource, User, Vault, VaultResource
from opencbr.domain import backup as B
from opencbr.domain import resource as R
from opencbr.domain.errors import CBRError, Forbidden, InvalidParameter, NotFound, StateConflict
from opencbr.providers import registry
from opencbr.providers.base import Opened, PathSwapped, Probe
from opencbr.services import hosts, listing, tasks
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


def made_from_encrypted_disk(s: Session, disk_id: str) -> bool:
    """Whether data backed up from disk ``disk_id`` is an encrypted disk's: the disk's own flag. A
    vault's at-rest encryption says nothing about it (every default vault is encrypted at rest), so a
    disk made from a backup takes the backed-up disk's flag, not the backup's. When the disk is gone,
    assume it was encrypted: never weaken a protection."""
    res = s.get(Resource, disk_id)
    return bool(res.encrypted) if res is not None else True


def server_disks(s: Session, server_id: str) -> list[Resource]:
    """The disks of a server: the system disk first, then data disks in attachment order."""
    return sorted(s.scalars(select(Resource).where(Resource.server_id == server_id)), key=_attachment_order)


def _attachment_order(disk: Resource) -> tuple:
    return disk.disk_role != "system", disk.device_index or 0


def disks_of_servers(s: Session, resources: list[Resource]) -> dict[str, list[Resource]]:
    """The disks of each server among ``resources`` (as ``server_disks`` orders them), in one query."""
    disks_of: dict[str, list[Resource]] = {r.id: [] for r in resources if r.type == R.SERVER}
    if disks_of:
        for d in s.scalars(select(Resource).where(Resource.server_id.in_(list(disks_of)))):
            disks_of[d.server_id].append(d)
        for disks in disks_of.values():
            disks.sort(key=_attachment_order)
    return disks_of


def live_status(s: Session, res: Resource, *, disks: list[Resource] | None = None) -> str:
    """The status of a resource as it is now: a disk whose file vanished or a directory that is gone is
    in error; a server with a missing disk is faulty (``disks``: the server's, when already loaded)."""
    if res.type != R.SERVER or res.provider == "agent":
        return live_status_of(res.provider, res.type, res.host, res.path, res.status)
    if res.status != "faulty" and any(d.status == "error" or not registry.present(d)
                                      for d in (server_disks(s, res.id) if disks is None else disks)):
        return "faulty"
    return res.status


def live_status_of(provider: str, rtype: str, host: str | None, path: str, status: str) -> str:
    """``live_status`` of a disk or file system (or of an agent's server), from its columns: a vault
    list page reads thousands as plain values."""
    if provider == "agent":
        return status  # as the agents' heartbeat last found it (services.agents.poll)
    if not hosts.host_is_here(host):
        return status  # another host's data: as its last task there found it
    return status if registry.present_at(provider, rtype, path) else "error"


def resource_state(s: Session, res: Resource, *, disks: list[Resource] | None = None) -> R.ResourceState:
    """What the domain rules need of a resource (``disks``: a server's, when already loaded)."""
    if disks is None:
        disks = server_disks(s, res.id) if res.type == R.SERVER else []
    size = sum(d.size_bytes for d in disks) if res.type == R.SERVER else res.size_bytes
    encrypted = any(d.encrypted for d in disks) if res.type == R.SERVER else res.encrypted
    return R.ResourceState(res.id, res.type, res.name, live_status(s, res, disks=disks), res.region, size, encrypted,
                           len(disks), res.provider or "")


# ------------------------------------------------------------------------------------ host paths
PATH_REFUSED = "BackupService.6112"  # a resource's path is not what was registered (swapped, replaced)
PATH_UNAVAILABLE = "BackupService.6113"  # a resource's path cannot be opened (missing, unreadable)


def check_host_path(s: Session, ctx: ServiceContext, p: Principal, path: str) -> None:
    """Which paths of the service's machine a tenant may name (to register a disk or file system, or to
    restore into): the service reads and writes them with its own rights, so another tenant's disk, or
    ``/etc``, must be out of reach. With ``resource_roots`` set, every path must lie below one of them;
    without, only the operator's own account may name paths (a single-owner installation)."""
    if ctx.settings.resource_roots:
        ctx.providers.default.check_allowed(path)
        return
    operator_account = s.scalar(select(User.id).where(User.account_id == p.account_id,
                                                      User.is_operator.is_(True)).limit(1))
    if operator_account is None:
        raise Forbidden("this installation lets tenants use no paths of its machines: the operator must set "
                        "resource_roots (the directories tenants' disks and file systems may live in)",
                        code="APIGW.0306")


def authorised_path(s: Session, ctx: ServiceContext, p: Principal, path: object) -> str:
    """The real path a caller may name. Permission and roots are checked on the path as given (made
    normal, nothing looked up) before the disk is touched, so a refused caller learns nothing of what
    exists; then on where it really leads (a symlink may lead out of the roots)."""
    provider = ctx.providers.default
    normal = provider.normal_path(path)
    check_host_path(s, ctx, p, normal)
    real = provider.real_path(normal)
    if real != normal:
        check_host_path(s, ctx, p, real)
    return real


def check_path_free(s: Session, ctx: ServiceContext, p: Principal, path: str, *, target: bool = False,
                    host: str | None = None) -> None:
    """A disk or directory belongs to one project: another project's resource at the same path, above
    it or below it would hand its data to a stranger (backing up ``/srv`` reads everything below it;
    restoring into ``/srv/a/fs/x`` writes into ``/srv/a/fs``). Between projects of one account this
    is allowed only with the setting ``allow_shared_paths_within_account``. Within one project
    resources may nest (a server's image files inside a directory also protected as a file system: the
    data is the project's either way), but one path is one resource. ``target``: a restore target,
    refused only inside (or at) another project's resource. ``host``: the host group the path is on
    (default this machine's); paths of other host groups are other machines' files."""
    host = host or ctx.settings.host_group
    escaped = path.rstrip("/").replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    near = [Resource.path == path, Resource.path.in_(ctx.providers.default.ancestors(path))]
    if not target:
        near.append(Resource.path.like(escaped + "/%", escape="\\"))
    rows = s.execute(select(Resource.project_id, Resource.path, Project.account_id)
                     .join(Project, Project.id == Resource.project_id)
                     .where(or_(*near), or_(Resource.host == host, Resource.host == ""),
                            Resource.provider != "agent")).all()  # (agents' paths are their hosts' own)
    shared = ctx.settings.allow_shared_paths_within_account
    for project_id, other, account_id in rows:
        if project_id == p.project_id:
            if other == path and not target:
                raise StateConflict(f"{path} is already registered as a resource", code="BackupService.6105")
        elif not (shared and account_id == p.account_id):
            raise StateConflict(f"{path} is, contains or lies inside a disk or file system of another project; "
                                "a path of this machine belongs to one project", code="BackupService.6105")


def open_resource(ctx: ServiceContext, resource_id: str, *, write: bool = False, create: bool = False,
                  row: Resource | None = None) -> Opened:
    """Open a disk's or file system's path for a task, checked again (roots, no symlink, the registered
    object: ``Provider.open``). Refused: the resource turns ``error`` with the reason and a
    CBR error says it; missing or unreadable: a CBR error (the resource's live status shows it).
    ``row``: a request holding the resource in its transaction (the refusal is only reported; the
    next task records it)."""
    res = row
    if res is None:
        with ctx.tx() as s:
            res = s.get(Resource, resource_id)
            if res is None:
                raise CBRError("the resource is no longer in the inventory", code="BackupService.6423")
            s.expunge(res)
    path, name, identity = res.path, res.name, dict(res.identity or {})
    try:
        return ctx.providers.for_resource(res).open(res.type, path, identity, write=write, create=create)
    except PathSwapped as e:
        if not create and row is None:
            mark_error(ctx, resource_id, str(e))
        raise StateConflict(f"{name}: {e}", code=PATH_REFUSED) from None
    except OSError as e:
        raise CBRError(f"{name}: cannot open {path}: {e.strerror}", code=PATH_UNAVAILABLE) from None


def open_target_directory(ctx: ServiceContext, path: str) -> Opened:
    """A restore target that is no resource (``restore-files --to``), checked again and made if missing."""
    try:
        return ctx.providers.default.open(R.FILE_SYSTEM, path, create=True)
    except PathSwapped as e:
        raise StateConflict(f"restore target: {e}", code=PATH_REFUSED) from None
    except OSError as e:
        raise CBRError(f"cannot open the restore target {path}: {e.strerror}", code=PATH_UNAVAILABLE) from None


def mark_error(ctx: ServiceContext, resource_id: str, reason: str) -> None:
    with ctx.tx() as s:
        res = s.get(Resource, resource_id)
        if res is not None:
            res.status, res.status_reason = "error", reason


def record_identity(ctx: ServiceContext, resource_id: str, opened: Opened, size: int | None = None) -> None:
    """After a backup or restore: what was read or written is the resource from now on (its identity),
    and its size: ``size``, else a disk's size as found (a file system's stays)."""
    identity = opened.identity()
    if size is None:
        size = opened.size()
    with ctx.tx() as s:
        res = s.get(Resource, resource_id)
        if res is not None:
            res.identity = identity
            if size is not None:
                res.size_bytes = size


def size_now(ctx: ServiceContext, disk: Resource) -> int:
    """A disk's size as it is now (image files grow), through a checked open; 0 when it is missing
    (its live status says so)."""
    try:
        opened = open_resource(ctx, disk.id, row=disk)
    except CBRError as e:
        if e.code == PATH_UNAVAILABLE:
            return 0
        raise
    with opened:
        return opened.size()


def empty_now(ctx: ServiceContext, fs: Resource) -> bool:
    """Whether a file system holds nothing, through a checked open (a missing one: its status says so)."""
    try:
        opened = open_resource(ctx, fs.id, row=fs)
    except CBRError as e:
        if e.code == PATH_UNAVAILABLE:
            return True
        raise
    with opened:
        return opened.is_empty()


def _probe_to_register(ctx: ServiceContext, real: str, rtype: str) -> Probe:
    try:
        return ctx.providers.default.probe(rtype, real)
    except PathSwapped as e:
        raise InvalidParameter(str(e)) from None
    except OSError as e:
        what = "disk" if rtype == R.DISK else "directory"
        raise InvalidParameter(f"cannot open {what} {real}: {e.strerror}") from None


# ------------------------------------------------------------------------------------ registration
def _check_az(ctx: ServiceContext, az: str | None) -> str:
    azs = ctx.settings.availability_zones
    if not az:
        return azs[0]
    if az not in azs:
        raise InvalidParameter(f"availability zone {az!r} does not exist; choose one of {', '.join(azs)}")
    return az


def register_disk(s: Session, ctx: ServiceContext, p: Principal, *, name: str, path: str,
                  az: str | None = None, encrypted: bool = False, description: str = "", host: str | None = None) -> Resource:
    p.require_write()
    R.check_resource_name(name)
    if host is not None and hosts.check_group_name(host) != ctx.settings.host_group:
        return hosts.register_elsewhere(s, ctx, p, rtype=R.DISK, name=name, path=path, host=host,
                                        az=_check_az(ctx, az), encrypted=encrypted, description=description,
                                        check_free=lambda normal: check_path_free(s, ctx, p, normal, host=host))
    real = authorised_path(s, ctx, p, path)
    probe = _probe_to_register(ctx, real, R.DISK)
    size, identity = probe.size, probe.identity
    check_path_free(s, ctx, p, real)
    res = Resource(project_id=p.project_id, type=R.DISK, name=name, path=real, size_bytes=size,
                   region=ctx.settings.region, availability_zone=_check_az(ctx, az), encrypted=bool(encrypted),
                   status="available", description=description or "", identity=identity,
                   host=ctx.settings.host_group)
    s.add(res)
    return res


def register_file_system(s: Session, ctx: ServiceContext, p: Principal, *, name: str, path: str,
                         az: str | None = None, description: str = "", host: str | None = None) -> Resource:
    """A directory tree, registered at once with size 0: a ``measure`` task counts its bytes in the
    background (a big tree takes minutes, and is measured where its data is); each backup refreshes it."""
    p.require_write()
    R.check_resource_name(name)
    if host is not None and hosts.check_group_name(host) != ctx.settings.host_group:
        return hosts.register_elsewhere(s, ctx, p, rtype=R.FILE_SYSTEM, name=name, path=path, host=host,
                                        az=_check_az(ctx, az), description=description,
                                        check_free=lambda normal: check_path_free(s, ctx, p, normal, host=host))
    real = authorised_path(s, ctx, p, path)
    identity = _probe_to_register(ctx, real, R.FILE_SYSTEM).identity
    check_path_free(s, ctx, p, real)
    res = Resource(project_id=p.project_id, type=R.FILE_SYSTEM, name=name, path=real, size_bytes=0,
                   region=ctx.settings.region, availability_zone=_check_az(ctx, az), status="available",
                   description=description or "", identity=identity, host=ctx.settings.host_group)
    s.add(res)
    s.flush()
    tasks.new_task(s, project_id=p.project_id, operation_type="measure", now=ctx.now(), resource_id=res.id,
                   resource_name=name, resource_type=R.FILE_SYSTEM, provider_id=R.PROVIDER_ID[R.FILE_SYSTEM],
                   request_id=p.request_id, params={"resource_id": res.id})
    return res


MEASURE_BUDGET_SECONDS = 600


def run_measure(ctx: ServiceContext, run: tasks.TaskRun) -> None:
    """Count a file system's bytes, for at most ``MEASURE_BUDGET_SECONDS`` (what was counted by then is
    kept, marked as a lower bound; the next backup knows the real size).

    Not when a backup of it was asked for (before or while counting): that backup reads the whole tree
    and records its size, and a second walk beside it would only take its CPU and disk. (Registering
    a file system and backing it up at once is the first thing a user does: the count, made cold,
    then ran for seconds beside the first backup; bench/README.md, realtree.)"""
    resource_id = run.params["resource_id"]
    try:
        opened = open_resource(ctx, resource_id)
    except CBRError as e:
        if e.code == "BackupService.6423":
            return  # removed meanwhile
        raise
    with opened:
        if _backup_asked(ctx, resource_id):
            size, complete = 0, False
        else:
            size, complete = opened.measure(budget_seconds=MEASURE_BUDGET_SECONDS,
                                            stop=lambda: _backup_asked(ctx, resource_id))
    if not complete and _backup_asked(ctx, resource_id):
        run.set_extra(measure={"left_to": "backup"})
        return
    with ctx.tx() as s:
        res = s.get(Resource, resource_id)
        if res is not None:
            res.size_bytes = size
    run.set_extra(measure={"size_bytes": size, "complete": complete})


def _backup_asked(ctx: ServiceContext, resource_id: str) -> bool:
    """Whether a backup of the resource is running or waiting to, or was made."""
    with ctx.read() as s:
        return s.scalar(select(Backup.id).where(Backup.resource_id == resource_id, Backup.status.in_(
            (B.PROTECTING, B.AVAILABLE))).limit(1)) is not None


def register_server(s: Session, ctx: ServiceContext, p: Principal, *, name: str, system_disk: str,
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
    disks = [get_resource(s, p.project_id, d, R.DISK) for d in ids]
    zone = _check_az(ctx, az or disks[0].availability_zone)
    for d in disks:
        if d.server_id is not None:
            raise StateConflict(f"disk {d.name} ({d.id}) is already attached to a server",
                                code="BackupService.6106")
        if d.availability_zone != zone:
            raise InvalidParameter(f"disk {d.name} is in {d.availability_zone}; the server is in {zone}")
    if len({d.host for d in disks}) > 1:  # one point in time is read by one worker, on one host
        raise InvalidParameter("a server's disks must all be on one host (group)")
    server = Resource(project_id=p.project_id, type=R.SERVER, name=name, region=ctx.settings.region,
                      availability_zone=zone, status=status, description=description or "",
                      host=disks[0].host)
    s.add(server)
    s.flush()
    for i, d in enumerate(disks):
        d.server_id = server.id
        d.disk_role = "system" if i == 0 else "data"
        d.device_index = i
        d.status = "in-use"
    server.size_bytes = sum(d.size_bytes for d in disks)
    return server


def set_server_status(s: Session, ctx: ServiceContext, p: Principal, server_id: str, status: str) -> Resource:
    """Start or stop a server (its provider does, where it runs servers; the catalog records it)."""
    p.require_write()
    if status not in R.SERVER_STATUSES:
        raise InvalidParameter(f"server status must be one of {', '.join(R.SERVER_STATUSES)}")
    server = get_resource(s, p.project_id, server_id, R.SERVER)
    if status != "faulty":  # (what a server is found to be, not a power state)
        ctx.providers.for_resource(server).set_power(server.id, running=status == "running")
    server.status = status
    return server


def remove_resource(s: Session, p: Principal, resource_id: str) -> None:
    """Remove a resource from the inventory (the files stay where they are). Its backups are kept
    (guide 13.2.9); its vault association goes. A disk attached to a server is removed with the
    server, not alone; removing a server detaches its disks."""
    p.require_write()
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


# ------------------------------------------------------------------------------------ listing
@dataclass
class ResourceView:
    """A resource with what the API and CLI show about it."""

    resource: Resource
    status: str
    disks: list[Resource]
    vault: Vault | None


def _view(s: Session, res: Resource) -> ResourceView:
    return _views(s, [res])[0]


def _views(s: Session, rows: list[Resource]) -> list[ResourceView]:
    """Views of several resources with a fixed number of queries, whatever their number."""
    disks_of = disks_of_servers(s, rows)
    # A disk of a protected server is protected through the server: it shows the server's vault.
    owners = {r.id: [r.id] + ([r.server_id] if r.type == R.DISK and r.server_id else []) for r in rows}
    bound = dict(s.execute(select(VaultResource.resource_id, VaultResource.vault_id).where(
        VaultResource.resource_id.in_({o for ids in owners.values() for o in ids}))).all())
    vault_ids = set(bound.values())
    vaults = {v.id: v for v in s.scalars(select(Vault).where(Vault.id.in_(vault_ids)))} if vault_ids else {}
    views = []
    for r in rows:
        vault_id = next((bound[o] for o in owners[r.id] if o in bound), None)
        disks = disks_of.get(r.id, [])
        views.append(ResourceView(r, live_status(s, r, disks=disks), disks, vaults.get(vault_id)))
    return views


SORT_KEYS = {"created_at": Resource.created_at, "updated_at": Resource.updated_at, "name": Resource.name,
             "id": Resource.id}


def list_resources(s: Session, p: Principal, *, rtype: str | None = None, name: str | None = None,
                   status: str | None = None, ids: list[str] | None = None, server_id: str | None = None,
                   limit: int | None = None, offset: int = 0,
                   sort: listing.Sort | None = None) -> tuple[list[ResourceView], int]:
    q = select(Resource).where(Resource.project_id == p.project_id)
    if rtype:
        q = q.where(Resource.type == R.check_resource_type(rtype))
    if name:
        q = q.where(listing.contains(Resource.name, name))
    if ids:
        q = q.where(Resource.id.in_(ids))
    if server_id:
        q = q.where(Resource.server_id == server_id)
    order = listing.order_by(sort, SORT_KEYS, [Resource.created_at, Resource.id], Resource.id)
    if not status:  # the page alone, counted and cut by the database
        total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
        return _views(s, list(s.scalars(q.order_by(*order).limit(limit).offset(offset)))), total
    # The live status (is the file still there?) is known only by looking, so a status filter looks
    # at every candidate; the views (and their queries) are built for the page alone.
    rows = [r for r in s.scalars(q.order_by(*order)) if _status_matches(s, r, status)]
    end = None if limit is None else offset + limit
    return _views(s, rows[offset:end]), len(rows)


def _status_matches(s: Session, res: Resource, status: str) -> bool:
    """Whether the resource's live status is ``status`` (a server's also by the name the protectables
    API shows). The live status differs from the stored one only by turning to error (a disk or file
    system whose data is gone) or faulty (a server with a missing disk): look only when that matters."""
    def names(st: str) -> tuple:
        return st, R.SERVER_API_STATUS.get(st)

    could_be = (res.status, "faulty" if res.type == R.SERVER else "error")
    if not any(status in names(st) for st in could_be):
        return False
    return status in names(live_status(s, res))


def show_resource(s: Session, p: Principal, resource_id: str, rtype: str | None = None) -> ResourceView:
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
        if run.released.is_set():  # handed back or taken over: the next run owns the half-made resource
            raise
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
