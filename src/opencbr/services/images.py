"""The image catalog (guide 6.2, 13.1.4, 13.7.3): full-server images made from server backups (replicas
too), and new servers made from them. The rules are in ``domain/image.py``.

An image is a catalog row that points at its backup's disk backups; it copies no data. A server made
from an image is a ``create_server`` task: each disk of the image becomes a new disk-image file at a path
the caller names (checked like every tenant path, and again when the task opens it), and once every disk
is written the server is registered with them (stopped, or running when asked). If the task fails or is
cancelled, the disks it made are removed, files and rows, and no server is registered.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from opencbr.catalog.models import Agent, Backup, Image, Resource, Task, Vault, new_id
from opencbr.domain import image as I
from opencbr.domain import resource as R
from opencbr.domain.errors import CBRError, InvalidParameter, NotFound, StateConflict
from opencbr.engine import OperationCancelled
from opencbr.providers.agent import AgentTaskFailed
from opencbr.providers.base import Opened
from opencbr.services import listing, memberships, onhost, tasks
from opencbr.services import resources as res_svc
from opencbr.services.agents import state as agent_state
from opencbr.services.agents.registry import get_agent
from opencbr.services.context import ServiceContext
from opencbr.services.lookups import children, project_row
from opencbr.services.principal import Principal
from opencbr.services.progress import TaskProgress
from opencbr.services.repositories import repository

OPERATION = "create_server"
log = logging.getLogger("opencbr.images")


# ------------------------------------------------------------------------------------ the catalog
def get_image(s: Session, project_id: str, image_id: str) -> Image:
    """An image of the project, or 404 (another project's image is indistinguishable from none)."""
    return project_row(s, Image, project_id, image_id, what="image", code="BackupService.6813")


def create_image(s: Session, ctx: ServiceContext, p: Principal, backup_id: str, *, name: object,
                 description: object = None) -> Image:
    """Guide 6.2: a full-server image of a server backup (or replica) that holds the system disk; one per
    backup. The backup is then ``used_by_image``: it cannot be deleted and retention neither deletes
    nor counts it (guide 5.2, 6.2). Guide 4.2: a server backup shared with the project and accepted makes
    an image too, one per recipient, in the vault it was accepted into; the sharer may still delete the
    backup, and the image goes with it (``memberships.images_follow``)."""
    p.require_write()
    name = I.check_image_name(name)
    description = I.check_image_description(description)
    b, shown = memberships.readable_backup(s, p.project_id, backup_id)
    b = s.get(Backup, b.id, with_for_update=True, populate_existing=True)  # against a deletion meanwhile
    vault = s.get(Vault, b.vault_id)
    kids = children(s, b.id)
    shared = b.project_id != p.project_id
    taken = (b.used_by_image and not shared) or s.scalar(
        select(Image.id).where(Image.backup_id == b.id, Image.project_id == p.project_id)) is not None
    I.check_image_source(resource_type=b.resource_type, is_disk_of_server=b.parent_id is not None,
                         status=b.status, vault_status=vault.status,
                         has_system_disk=any(k.disk_role == "system" for k in kids), has_image=taken)
    disks = [{"backup_id": k.id, "disk_role": k.disk_role or "data", "device_index": k.device_index or 0,
              "size_bytes": int(k.resource_size_bytes or 0), "resource_name": k.resource_name} for k in kids]
    now = ctx.now()
    image = Image(project_id=p.project_id, name=name, description=description, status=I.ACTIVE, backup_id=b.id,
                  vault_id=shown.id, source_resource_id=b.resource_id, source_resource_name=b.resource_name,
                  source_image_type=b.image_type, region=ctx.settings.region,
                  size_bytes=sum(d["size_bytes"] for d in disks), disks=disks, created_at=now, updated_at=now)
    s.add(image)
    s.flush()
    if shared:  # the member's image_id (CBR v3 API: the image made from the accepted backup)
        memberships.member_of(s, b.id, p.project_id).image_id = image.id
    else:
        b.used_by_image = True
    return image


SORT_KEYS = {"created_at": Image.created_at, "name": Image.name, "id": Image.id}


def list_images(s: Session, p: Principal, *, name: str | None = None, backup_id: str | None = None,
                limit: int | None = None, offset: int = 0,
                sort: listing.Sort | None = None) -> tuple[list[Image], int]:
    q = select(Image).where(Image.project_id == p.project_id)
    if name:
        q = q.where(listing.contains(Image.name, name))
    if backup_id:
        q = q.where(Image.backup_id == backup_id)
    total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
    order = listing.order_by(sort, SORT_KEYS, [Image.created_at.desc(), Image.id], Image.id)
    return list(s.scalars(q.order_by(*order).limit(limit).offset(offset))), total


def show_image(s: Session, p: Principal, image_id: str) -> Image:
    return get_image(s, p.project_id, image_id)


def delete_image(s: Session, ctx: ServiceContext, p: Principal, image_id: str) -> Image:
    """Delete an image; its backup can be deleted again (guide 6.2, 13.7.3) and retention treats it as any
    other. Servers made from the image are theirs and stay (13.1.4). Refused while a server is being made
    from it (its backup must stay readable until then)."""
    p.require_write()
    image = get_image(s, p.project_id, image_id)
    if _servers_in_progress(s, image):
        raise StateConflict("a server is being created from this image; delete it when that task has finished",
                            code="BackupService.6814")
    b = s.get(Backup, image.backup_id, with_for_update=True)
    if b is not None and b.project_id == image.project_id:
        b.used_by_image = False
    elif b is not None:
        m = memberships.member_of(s, b.id, image.project_id)
        if m is not None:
            m.image_id = ""
    s.delete(image)
    return image


def _servers_in_progress(s: Session, image: Image) -> bool:
    rows = s.scalars(select(Task).where(Task.project_id == image.project_id, Task.operation_type == OPERATION,
                                        Task.status.in_((tasks.WAITING, tasks.RUNNING))))
    return any((t.params or {}).get("image_id") == image.id for t in rows)


def check_vault_without_images(s: Session, vault_id: str) -> None:
    """Deleting a vault deletes its backups; one that an image was made from cannot be (guide 6.2), so
    neither can the vault until that image is deleted. A vault holding an accepted shared backup with the
    recipient's image of it stays too (guide 13.7.5: servers are made from the image through it)."""
    own = and_(Backup.vault_id == vault_id, Image.project_id == Backup.project_id)
    accepted = and_(Image.vault_id == vault_id, Image.project_id != Backup.project_id)  # guide 13.7.5
    image = s.scalar(select(Image).join(Backup, Backup.id == Image.backup_id).where(or_(own, accepted)).limit(1))
    if image is not None:
        raise StateConflict(f"image {image.name} ({image.id}) was created from a backup of this vault; delete the "
                            "image before the vault", code="BackupService.6815")


# ------------------------------------------------------------------------------------ new servers
def create_server_from_image(s: Session, ctx: ServiceContext, p: Principal, image_id: str, *, name: object,
                             paths: list | None = None, directory: object = None, az: str | None = None,
                             power_on: object = False, agent_id: str | None = None) -> tuple[str, str, list[str]]:
    """A new server from an image (guide 6.2 step 5, 13.1.4: one image, many servers). Each disk of the
    image becomes a new disk-image file (``paths``, one per disk, system first; or in ``directory``), as
    large as the disk that was backed up, on this machine or, with ``agent_id``, on that agent's host
    (its roots decide there); the disks are ``restoring`` until the task has written them, then the
    server is registered with them. Returns (task id, the server's id to be, the disk ids)."""
    p.require_write()
    R.check_resource_name(name)
    if not isinstance(power_on, bool):
        raise InvalidParameter("power_on must be true or false")
    image = get_image(s, p.project_id, image_id)
    try:  # the project's own backup, or a shared one still accepted (guide 4.2)
        b, shown = memberships.readable_backup(s, p.project_id, image.backup_id)
    except NotFound:
        b = shown = None
    vault = s.get(Vault, b.vault_id) if b is not None else None
    if b is None or vault is None:
        raise StateConflict("this image's backup is gone; delete the image", code="BackupService.6810")
    I.check_image_usable(b.status, vault.status)
    vault = shown  # the task is the project's, in its own vault (a sharer's vault is not the recipient's to see)
    wanted = I.new_disk_paths(len(image.disks), paths=paths, directory=directory, server_name=name)
    agent = _online_agent(s, ctx, p, agent_id) if agent_id is not None else None
    reals = [_agent_disk_path(s, agent, path) if agent else _new_disk_path(s, ctx, p, path) for path in wanted]
    if len(set(reals)) != len(reals):
        raise InvalidParameter("each new disk needs a path of its own", code="BackupService.6812")
    zone = az or b.resource_az or ctx.settings.availability_zones[0]
    if zone not in ctx.settings.availability_zones:
        raise InvalidParameter(f"availability zone {zone!r} does not exist")
    server_id = new_id()
    steps = _new_disk_rows(s, ctx, p, image, name, reals, zone=zone, agent=agent)
    task = tasks.new_task(s, project_id=p.project_id, operation_type=OPERATION, now=ctx.now(), vault_id=vault.id,
                          vault_name=vault.name, resource_id=server_id, resource_name=name, resource_type=R.SERVER,
                          provider_id=R.PROVIDER_ID[R.SERVER], request_id=p.request_id,
                          # local paths were checked on this machine; any worker can drive an agent
                          required_host="" if agent else ctx.settings.host_group,
                          params={"image_id": image.id, "server_id": server_id, "name": name, "az": zone,
                                  "description": f"created from image {image.name} ({image.id})",
                                  "power_on": power_on, "disks": steps},
                          extra_info={"create_server": {"image_id": image.id, "image_name": image.name,
                                                        "server_id": server_id, "server_name": name}})
    return task.id, server_id, [st["disk_id"] for st in steps]


def _new_disk_rows(s: Session, ctx: ServiceContext, p: Principal, image: Image, name: str, paths: list[str], *,
                   zone: str, agent: Agent | None) -> list[dict]:
    """The new server's disks, ``restoring`` until the task has written them; the task's steps. Each
    new disk is encrypted as the disk it was backed up from was (not as the vault stores data)."""
    steps = []
    for i, (disk, path) in enumerate(zip(image.disks, paths, strict=True)):
        disk_backup = s.get(Backup, disk["backup_id"])
        encrypted = res_svc.made_from_encrypted_disk(s, disk_backup.resource_id) if disk_backup else True
        row = Resource(project_id=p.project_id, type=R.DISK, name=f"{name}-{i + 1}", path=path,
                       size_bytes=disk["size_bytes"], region=ctx.settings.region, availability_zone=zone,
                       encrypted=encrypted, status="restoring", host="" if agent else ctx.settings.host_group,
                       provider="agent" if agent else "local", agent_id=agent.id if agent else None,
                       description=f"disk {i + 1} of server {name}, from image {image.name} ({image.id})")
        s.add(row)
        s.flush()
        steps.append({"backup_id": disk["backup_id"], "disk_id": row.id, "size": disk["size_bytes"],
                      "disk_role": disk["disk_role"], "on_host": agent is not None})
    return steps


def _new_disk_path(s: Session, ctx: ServiceContext, p: Principal, path: str) -> str:
    """A path for a new disk: allowed to the caller, free, its directory there (guide 6.4's rules for a
    new disk, as ``restore.create_disk_from_backup`` applies them)."""
    real = res_svc.authorised_path(s, ctx, p, path)
    there = ctx.providers.default.path_state(real)
    if there.exists:
        raise StateConflict(f"{path} already exists; choose a new path for the new disk", code="BackupService.6432")
    if not there.parent_is_directory:
        raise InvalidParameter(f"the directory of {path} does not exist")
    res_svc.check_path_free(s, ctx, p, real)
    return real


def _online_agent(s: Session, ctx: ServiceContext, p: Principal, agent_id: object) -> Agent:
    """The project's agent that will write the new disks on its host, online now (else 409, not a task
    that hangs on it)."""
    agent = get_agent(s, p.project_id, agent_id)
    if not agent_state.is_online(ctx, agent):
        raise StateConflict(f"agent {agent_id}: {agent_state.offline_reason(agent)}", code="BackupService.6817")
    return agent


def _agent_disk_path(s: Session, agent: Agent, path: str) -> str:
    """A new disk on an agent's host: an image file (``.img`` or ``.raw``, what its inventory reports) that
    is not a resource of that agent yet; the agent refuses paths outside its roots when it creates it."""
    normal = posixpath.normpath(path)
    if not normal.endswith(I.HOST_DISK_SUFFIXES):
        raise InvalidParameter(f"{path}: a new disk on an agent's host is an image file ending in "
                               f"{' or '.join(I.HOST_DISK_SUFFIXES)}", code="BackupService.6811")
    taken = s.scalar(select(Resource.id).where(Resource.agent_id == agent.id, Resource.path == normal).limit(1))
    if taken is not None:
        raise StateConflict(f"{path} is already a resource of agent {agent.id}", code="BackupService.6432")
    return normal


def run_create_server(ctx: ServiceContext, run: tasks.TaskRun) -> None:
    params = run.params
    steps = params["disks"]
    with ctx.tx() as s:
        vault = s.get(Vault, s.get(Backup, steps[0]["backup_id"]).vault_id)
        s.expunge(vault)
    repo = repository(ctx, vault, create=False)
    progress = TaskProgress(run)
    made: list[Opened] = []  # the new images, each created (O_EXCL) through a checked open
    on_host: list[dict] = []  # the new images an agent made on its host: (disk id, path)
    try:
        for i, step in enumerate(steps):
            span = progress.span(int(99 * i / len(steps)), int(99 * (i + 1) / len(steps)))
            if step.get("on_host"):
                on_host.append(_write_on_host(ctx, repo, step, span))
                continue
            made.append(res_svc.open_resource(ctx, step["disk_id"], create=True))
            new = made[-1]
            new.set_size(max(step["size"], repo.disk_image(step["backup_id"]).disk_size))
            repo.restore_disk(step["backup_id"], new.path, progress=span, cancel=progress.cancel, truncate=False,
                              target_fd=new.fd)
            new.copy_permissions(None)  # 0600: the source server's files are not ours to look at
            res_svc.record_identity(ctx, step["disk_id"], new)
    except BaseException as e:
        _remove_files(ctx, made, on_host)  # (only what this run created: the next run, if any, makes them anew)
        if run.released.is_set():  # handed back or taken over: the disk rows are the next run's
            raise
        _remove_rows(ctx, steps)
        if isinstance(e, OperationCancelled):
            raise tasks.TaskCancelled(run.task_id) from None
        raise
    finally:
        for new in made:
            new.close()
    _register_server(ctx, params)


def _write_on_host(ctx: ServiceContext, repo, step: dict, span: TaskProgress) -> dict:
    """The agent of the new disk creates its image file (O_EXCL, below its roots) and writes the disk backup
    into it, reading the chunks from the vault through the task's channel, as restores to agents' hosts do."""
    link = onhost.link_to(ctx, step["disk_id"])
    with ctx.tx() as s:
        row = s.get(Resource, step["disk_id"])
        provider, path = ctx.providers.for_resource(row), row.path
    try:
        provider.restore(repo, link.connect, project_id=link.project_id, backup_id=step["backup_id"], kind="disk",
                         target=path, create=True, cancel=span.cancel, bandwidth=link.bandwidth, progress=span,
                         agent_id=link.agent_id)
    except AgentTaskFailed as e:
        if span.cancel.is_set():
            raise OperationCancelled("the server creation was cancelled") from None
        raise onhost.agent_error(e) from None
    return {"disk_id": step["disk_id"], "path": path}


def _remove_files(ctx: ServiceContext, made: list[Opened], on_host: list[dict]) -> None:
    """A failed or cancelled task leaves nothing: the files it created, here or on the agent's host (the
    agent removes the one that failed itself)."""
    for new in made:
        new.remove_created()
    for done in on_host:
        try:
            link = onhost.link_to(ctx, done["disk_id"])
            ctx.providers.get("agent").remove_disk(link.connect, project_id=link.project_id, path=done["path"])
        except (CBRError, AgentTaskFailed) as e:  # (the agent went away meanwhile: said, not hidden)
            log.warning("could not remove %s from the agent's host: %s", done["path"], e)


def _remove_rows(ctx: ServiceContext, steps: list[dict]) -> None:
    """The rows of the disks a failed or cancelled task was making go with their files."""
    with ctx.tx() as s:
        for step in steps:
            row = s.get(Resource, step["disk_id"])
            if row is not None and row.status == "restoring":
                s.delete(row)


def _register_server(ctx: ServiceContext, params: dict) -> None:
    """Every disk is written: the server is registered with them (``register_server``'s shape: the system
    disk first, attached disks ``in-use``), stopped unless ``power_on``."""
    with ctx.tx() as s:
        disks = [s.get(Resource, step["disk_id"]) for step in params["disks"]]
        if any(d is None for d in disks):
            raise CBRError("a disk of the new server was removed from the inventory while it was being made",
                           code="BackupService.6816")
        on_host = disks[0].provider == "agent"  # (the path tells the agent's inventory it is not the host's)
        server = Resource(id=params["server_id"], project_id=disks[0].project_id, type=R.SERVER,
                          name=params["name"], region=ctx.settings.region, availability_zone=params["az"],
                          status="running" if params.get("power_on") else "stopped", host=disks[0].host,
                          provider=disks[0].provider, agent_id=disks[0].agent_id,
                          path=disks[0].path if on_host else "",
                          size_bytes=sum(d.size_bytes for d in disks),
                          description=params.get("description", ""))
        s.add(server)
        s.flush()
        for i, (d, step) in enumerate(zip(disks, params["disks"], strict=True)):
            d.server_id, d.disk_role, d.device_index = server.id, step["disk_role"], i
            d.status, d.status_reason = "in-use", ""
        # one UPDATE, not read-then-write: servers made from one image at once on several workers all count
        s.execute(update(Image).where(Image.id == params["image_id"])
                  .values(servers_created=Image.servers_created + 1))
    if params.get("power_on"):
        with ctx.tx() as s:
            ctx.providers.for_resource(s.get(Resource, params["server_id"])).set_power(params["server_id"],
                                                                                      running=True)


def abandon_create_server(s: Session, task: Task) -> None:
    """A create-server task whose worker died: the half-made disks go, rows and files (as a failed one's)."""
    for step in (task.params or {}).get("disks") or []:
        d = s.get(Resource, step.get("disk_id"))
        if d is not None and d.status == "restoring":
            path, here = d.path, d.provider != "agent"  # (an agent's file is its host's, not this machine's)
            s.delete(d)
            s.flush()
            if here:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


def image_ids(s: Session, rows: list[Backup]) -> dict[str, str]:
    """backup id -> the id of the image its owner made from it, for the backups among ``rows`` that have one
    (one query, none when no row is ``used_by_image``). A recipient's image of a shared backup is the
    recipient's, not shown to the sharer."""
    ids = [b.id for b in rows if b.used_by_image]
    if not ids:
        return {}
    return dict(s.execute(select(Image.backup_id, Image.id).join(Backup, Backup.id == Image.backup_id)
                          .where(Image.backup_id.in_(ids), Image.project_id == Backup.project_id)).all())

