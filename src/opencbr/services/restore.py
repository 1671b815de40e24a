"""Restores (guide chapter 6, 13.4): a backup back onto its disk or server, into a new (empty) file
system, onto a new disk; and a disk backup downloaded as a raw image (beyond 13.7.6).

Each restore is a task. While it runs the backup is ``restoring``; a server is stopped first and started
afterwards when asked (13.4.1).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass

from sqlalchemy.orm import Session

from opencbr.catalog.models import Backup, Resource, Task, Vault
from opencbr.domain import backup as B
from opencbr.domain import resource as R
from opencbr.domain.errors import CBRError, DataCorruption, InvalidParameter, StateConflict
from opencbr.engine import OperationCancelled
from opencbr.providers.agent import AgentTaskFailed
from opencbr.providers.base import Opened
from opencbr.services import app_consistency, engine_errors, memberships, onhost, tasks
from opencbr.services import resources as res_svc
from opencbr.services.agents import targets as agent_targets
from opencbr.services.context import ServiceContext
from opencbr.services.lookups import children, get_backup
from opencbr.services.principal import Principal
from opencbr.services.progress import TaskProgress
from opencbr.services.repositories import repository

log = logging.getLogger("opencbr.restore")


def restore_backup(s: Session, ctx: ServiceContext, p: Principal, backup_id: str, body: dict) -> str:
    """Guide 6.1 (server) and 6.3 (disk): restore a backup to its resource. Server: stopped first,
    ``mappings`` choose target disks, ``power_on`` (default true) starts it afterwards."""
    p.require_write()
    now = ctx.now()
    b = get_backup(s, p.project_id, backup_id, for_update=True)
    vault = s.get(Vault, b.vault_id)
    B.check_restorable(b.status, vault.status, b.image_type)
    if b.parent_id is not None:
        raise InvalidParameter("this is one disk of a server backup; restore the server backup, or create a "
                               "disk from it", code="BackupService.6427")
    _check_target_fields(b.resource_type, body)
    if b.resource_type == R.DISK:
        target_id = body.get("volume_id") or b.resource_id
        target = res_svc.get_resource(s, p.project_id, target_id, R.DISK)
        B.check_disk_restore_target(_status_for_restore(s, target), _size_now(ctx, target),
                                    b.resource_size_bytes, target.id == b.resource_id)
        plan = [{"backup_id": b.id, "path": target.path, "disk_id": target.id}]
        server_id, power_on, target_name = None, False, target.name
    elif b.resource_type == R.SERVER:
        server_id = body.get("server_id") or b.resource_id
        if server_id != b.resource_id:
            raise InvalidParameter("a server backup is restored to its own server; create an image to make a "
                                   "new one", code="BackupService.6428")
        server = res_svc.get_resource(s, p.project_id, server_id, R.SERVER)
        B.check_server_restore(_server_status_for_restore(s, server))
        power_on = body.get("power_on", True)
        if not isinstance(power_on, bool):
            raise InvalidParameter("power_on must be true or false")
        plan = _server_plan(s, ctx, p, b, server, body.get("mappings"))
        target_name = server.name
    else:
        target_id = body.get("resource_id")
        B.check_file_system_restore_target(b.resource_id, target_id)
        target = res_svc.get_resource(s, p.project_id, target_id, R.FILE_SYSTEM)
        B.check_new_file_system(_status_for_restore(s, target), _empty_now(ctx, target))
        plan = [{"backup_id": b.id, "path": target.path, "disk_id": target.id}]
        server_id, power_on, target_name = None, False, target.name
    b.status, b.updated_at = B.RESTORING, now
    _hold_targets(s, plan)
    task = tasks.new_task(s, project_id=p.project_id, operation_type="restore", now=now, vault_id=vault.id,
                          vault_name=vault.name, resource_id=server_id or plan[0]["disk_id"],
                          resource_name=b.resource_name, resource_type=b.resource_type,
                          provider_id=R.PROVIDER_ID[b.resource_type], request_id=p.request_id,
                          params={"backup_id": b.id, "plan": plan, "server_id": server_id, "power_on": power_on},
                          extra_info={"restore": {"backup_id": b.id, "backup_name": b.name,
                                                  "target_resource_id": server_id or plan[0]["disk_id"],
                                                  "target_resource_name": target_name}})
    return task.id


#: The fields of a restore that name its target, by the type of the backup they apply to.
_TARGET_FIELDS = {R.DISK: ("volume_id",), R.SERVER: ("server_id", "mappings"), R.FILE_SYSTEM: ("resource_id", "details")}
_KIND_NAMES = {R.DISK: "disk", R.SERVER: "server", R.FILE_SYSTEM: "file-system"}


def _check_target_fields(rtype: str, body: dict) -> None:
    """A target field of another type of backup is refused: it used to be ignored, so a server backup given
    ``volume_id`` (or a disk backup given ``server_id``) was restored onto its own resource instead."""
    wrong = [k for t, keys in _TARGET_FIELDS.items() if t != rtype for k in keys
             if body.get(k) not in (None, [], {})]
    if wrong:
        allowed = " or ".join(_TARGET_FIELDS[rtype])
        raise InvalidParameter(f"{', '.join(wrong)} does not apply to a {_KIND_NAMES[rtype]} backup; "
                               f"its target is given by {allowed}")


def _size_now(ctx: ServiceContext, disk: Resource) -> int:
    """A disk's size now; an agent's disk: as its agent's last inventory found it (the API never
    talks to agents)."""
    return int(disk.size_bytes or 0) if onhost.on_host(ctx, disk) else res_svc.size_now(ctx, disk)


def _empty_now(ctx: ServiceContext, fs: Resource) -> bool:
    """Whether a file system holds nothing; an agent's: its size as its agent's last inventory found it."""
    return not fs.size_bytes if onhost.on_host(ctx, fs) else res_svc.empty_now(ctx, fs)


def _status_for_restore(s: Session, target: Resource) -> str:
    """A target's status as a restore sees it: one left in error by an unfinished restore is repaired by
    restoring it again, so it counts as available."""
    status = res_svc.live_status(s, target)
    return "available" if R.repairable_by_restore(status, target.status_reason) else status


def _server_status_for_restore(s: Session, server: Resource) -> str:
    """A server's status as a restore sees it: faulty only because a restore into some of its disks did
    not finish, it is repaired by restoring it again (as those disks say), so it is not refused as faulty."""
    disks = res_svc.server_disks(s, server.id)
    others = [d for d in disks if not R.repairable_by_restore(d.status, d.status_reason)]
    status = res_svc.live_status(s, server, disks=others)
    if status == "faulty" and server.provider == "agent" and len(others) < len(disks) \
            and not any(d.status == "error" for d in others):
        return "stopped"  # (an agent's server: faulty as its heartbeat found the disks)
    return status


def _server_plan(s: Session, ctx: ServiceContext, p: Principal, b: Backup, server: Resource,
                 mappings: object) -> list[dict]:
    kids = children(s, b.id)
    disks = {d.id: d for d in res_svc.server_disks(s, server.id)}
    if mappings:
        if not isinstance(mappings, list):
            raise InvalidParameter("mappings must be a list of {backup_id, volume_id}")
        pairs = []
        by_id = {k.id: k for k in kids}
        for m in mappings:
            if not isinstance(m, dict) or m.get("backup_id") not in by_id:
                raise InvalidParameter("each mapping needs the backup_id of a disk in this server backup",
                                       code="BackupService.6430")
            pairs.append((by_id[m["backup_id"]], m.get("volume_id")))
    else:
        # Default: each disk to itself (guide 6.1 step 5); disks removed since are skipped (13.4.4).
        pairs = [(k, k.resource_id) for k in kids if k.resource_id in disks]
        if not pairs:
            raise StateConflict("none of the backed-up disks is attached to the server any more; give mappings",
                                code="BackupService.6431")
    B.check_mapping_targets([t for _, t in pairs])
    plan = []
    for kid, target_id in pairs:
        target = disks.get(target_id)
        B.check_server_mapping(kid.disk_role or "data", kid.resource_size_bytes,
                               target.disk_role if target else None,
                               _size_now(ctx, target) if target else 0, target is not None)
        plan.append({"backup_id": kid.id, "path": target.path, "disk_id": target.id})
    return plan


def run_restore(ctx: ServiceContext, run: tasks.TaskRun) -> None:
    backup_id, plan = run.params["backup_id"], run.params["plan"]
    server_id, power_on = run.params.get("server_id"), run.params.get("power_on")
    with ctx.tx() as s:
        b = s.get(Backup, backup_id)
        vault = s.get(Vault, b.vault_id)
        s.expunge(vault)
        if server_id:
            # Guide 13.4.1: the server is shut down before its data is restored.
            server = s.get(Resource, server_id)
            ctx.providers.for_resource(server).set_power(server.id, running=False)
            server.status = "stopped"
    repo = repository(ctx, vault, create=False)
    progress = TaskProgress(run)
    prepared: list[str] = []
    i = 0
    try:
        for i, step in enumerate(plan):
            span = progress.span(int(99 * i / len(plan)), int(99 * (i + 1) / len(plan)))
            if _on_host(ctx, step["disk_id"]):
                prepared += _restore_on_host(ctx, repo, step, span)
                continue
            with res_svc.open_resource(ctx, step["disk_id"], write=True) as target:  # checked again
                _refuse_if_attached(target, step["path"])
                repo.restore(step["backup_id"], step["path"], progress=span, cancel=progress.cancel,
                             target_fd=target.fd)
                res_svc.record_identity(ctx, step["disk_id"], target)
    except OperationCancelled:
        _restore_done(ctx, backup_id, None, plan, unfinished="the restore was cancelled")
        raise tasks.TaskCancelled(run.task_id) from None
    except Exception as e:
        # the disks before the failing one were written; the failing one too, unless the agent refused
        # it before writing (in use: mounted); the ones after it were not touched and stay as they were
        touched = plan[:i] if getattr(e, "nothing_written", False) else plan[:i + 1]
        _restore_done(ctx, backup_id, None if touched else (server_id if power_on else None), plan,
                      unfinished=tasks.error_of(ctx, e).message, touched=touched)
        raise
    if prepared:  # the restored databases readied (or what the user does): docs/app-consistent.md
        run.set_extra(app_consistency={"prepared": prepared[:100]})
    _restore_done(ctx, backup_id, server_id if power_on else None, plan)


def _refuse_if_attached(target: Opened, path: str) -> None:
    """A disk image attached to a loop device (and perhaps mounted) is in use: writing it corrupts the file
    system on it, and opening the file never says so (a block device's exclusive open does). Refused
    before anything is written, the disk keeping its status (as an agent's ``in_use``)."""
    loops = target.attached_loops()
    if loops:
        err = StateConflict(f"{path} is attached to {', '.join(loops)} on this host: detach it (umount, "
                            "losetup -d), then restore again; nothing was written to it", code=res_svc.PATH_UNAVAILABLE)
        err.nothing_written = True
        raise err


def _on_host(ctx: ServiceContext, resource_id: str) -> bool:
    with ctx.tx() as s:
        res = s.get(Resource, resource_id)
        return res is not None and onhost.on_host(ctx, res)


def _restore_on_host(ctx: ServiceContext, repo, step: dict, span: TaskProgress) -> list[str]:
    """The agent holding the target writes it (the original disk or directory, or one on another host of
    the project), reading the backup's chunks from the vault through the task's channel; what it did to
    ready the databases of an app-consistent backup (or why it could not)."""
    link = onhost.link_to(ctx, step["disk_id"])
    with ctx.tx() as s:
        provider = ctx.providers.for_resource(s.get(Resource, step["disk_id"]))
        kind = repo.kind(step["backup_id"])
        ready = app_consistency.restore_args(s, s.get(Backup, step["backup_id"]), kind)  # databases to ready
    app = app_consistency.with_material(repo, step["backup_id"], ready)  # (outside the transaction: 64 MiB)
    try:
        out = provider.restore(repo, link.connect, project_id=link.project_id, backup_id=step["backup_id"],
                               kind=kind, target=step["path"], cancel=span.cancel,
                               bandwidth=link.bandwidth, progress=span, agent_id=link.agent_id, **app)
        return list(out.get("prepared") or []) if isinstance(out, dict) else []
    except AgentTaskFailed as e:
        if span.cancel.is_set():
            raise OperationCancelled("the restore was cancelled") from None
        raise _agent_failure(e) from None


def _agent_failure(e: AgentTaskFailed) -> Exception:
    """An agent's refusal or failure as the task's error; ``nothing_written`` when the agent refused the
    target at its open, before writing (``in_use``: a device mounted or held), so the target keeps its
    status instead of turning ``error`` with a mix of old and restored data it does not have."""
    err = onhost.agent_error(e)
    err.nothing_written = e.code == "in_use"
    return err


def _restore_done(ctx: ServiceContext, backup_id: str, start_server: str | None, plan: list[dict], *,
                  unfinished: str | None = None, touched: list[dict] | None = None) -> None:
    with ctx.tx() as s:
        b = s.get(Backup, backup_id)
        if b is not None and b.status == B.RESTORING:
            b.status, b.updated_at = B.AVAILABLE, ctx.now()
        _settle_targets(s, plan, b.name if b is not None else backup_id, unfinished, touched)
        if start_server:
            server = s.get(Resource, start_server)
            if server is not None:
                ctx.providers.for_resource(server).set_power(server.id, running=True)
                server.status = "running"


def _hold_targets(s: Session, plan: list[dict]) -> None:
    """The disks (or file system) a restore writes are ``restoring`` from its request to its end: nothing
    else restores or backs them up meanwhile."""
    for step in plan:
        target = s.get(Resource, step["disk_id"])
        if target is not None:
            target.status = "restoring"


def _settle_targets(s: Session, plan: list[dict], backup_name: str, unfinished: str | None,
                    touched: list[dict] | None = None) -> None:
    """After a restore: its targets are usable again (a repaired one loses its error), or, when it did
    not finish, in error saying so (their data is a mix; restoring again repairs them). ``touched``: the
    steps that may have written their target (default: all); the others are settled as they were."""
    for step in plan:
        target = s.get(Resource, step["disk_id"])
        if target is None:
            continue
        if unfinished is not None and touched is not None and step not in touched:
            if target.status == "restoring":  # untouched: as it was (still to repair, if it was)
                target.status = "error" if R.repairable_by_restore("error", target.status_reason) else \
                    R.settled_status(target.type, bool(target.server_id))
            continue
        if unfinished is None:
            target.status = R.settled_status(target.type, bool(target.server_id))
            target.status_reason = ""
        else:
            target.status = "error"
            target.status_reason = R.unfinished_restore_reason(backup_name, unfinished, target.type)


# ------------------------------------------------------------------------------------ new disks
def create_disk_from_backup(s: Session, ctx: ServiceContext, p: Principal, backup_id: str, *, name: str, path: str,
                            size_bytes: int | None = None, az: str | None = None,
                            agent_id: str | None = None) -> tuple[str, str]:
    """Guide 6.4: a new disk (an image file at ``path``; with ``agent_id``, on that agent's host) with the
    backup's data, at least as large as the source disk, in any AZ, registered as a resource. Returns
    (task id, disk id)."""
    p.require_write()
    R.check_resource_name(name)
    if agent_id is None:
        real = res_svc.authorised_path(s, ctx, p, path)
        there = ctx.providers.default.path_state(real)
        if there.exists:
            raise StateConflict(f"{path} already exists; choose a new path for the new disk",
                                code="BackupService.6432")
        if not there.parent_is_directory:
            raise InvalidParameter(f"the directory of {path} does not exist")
    now = ctx.now()
    # Its own backup, or one shared with it and accepted (guide 4.2): the task names the project's vault.
    b, shown = memberships.readable_backup(s, p.project_id, backup_id)
    vault = s.get(Vault, b.vault_id)
    B.check_restorable(b.status, vault.status, "backup")
    if b.resource_type != R.DISK:
        raise InvalidParameter("create a disk from a disk backup, or from one disk of a server backup "
                               "(see its children)", code="BackupService.6433")
    size = B.check_new_disk_size(size_bytes, b.resource_size_bytes)
    zone = az or b.resource_az or ctx.settings.availability_zones[0]
    if zone not in ctx.settings.availability_zones:
        raise InvalidParameter(f"availability zone {zone!r} does not exist")
    description = f"created from backup {b.name} ({b.id})"
    encrypted = res_svc.made_from_encrypted_disk(s, b.resource_id)
    if agent_id is not None:  # the agent creates the image (13.4.8: a new disk on the same or another host)
        disk = agent_targets.new_disk(s, ctx, p, agent_id, path, name=name, size=size, zone=zone,
                                      encrypted=encrypted, description=description)
    else:
        res_svc.check_path_free(s, ctx, p, real)
        disk = Resource(project_id=p.project_id, type=R.DISK, name=name, path=real, size_bytes=size,
                        region=ctx.settings.region, availability_zone=zone, encrypted=encrypted,
                        status="restoring", description=description,
                        host=ctx.settings.host_group)  # the path was checked on this machine
        s.add(disk)
        s.flush()
    task = tasks.new_task(s, project_id=p.project_id, operation_type="create_disk", now=now, vault_id=shown.id,
                          vault_name=shown.name, resource_id=disk.id, resource_name=name, resource_type=R.DISK,
                          provider_id=R.PROVIDER_ID[R.DISK], request_id=p.request_id,
                          params={"backup_id": b.id, "disk_id": disk.id, "size": size},
                          extra_info={"restore": {"backup_id": b.id, "backup_name": b.name,
                                                  "target_resource_id": disk.id, "target_resource_name": name}})
    return task.id, disk.id


def run_create_disk(ctx: ServiceContext, run: tasks.TaskRun) -> None:
    backup_id, disk_id, size = run.params["backup_id"], run.params["disk_id"], run.params["size"]
    with ctx.tx() as s:
        b = s.get(Backup, backup_id)
        disk = s.get(Resource, disk_id)
        if b is None or disk is None:
            raise CBRError("the backup or the new disk no longer exists", code="BackupService.6434")
        vault = s.get(Vault, b.vault_id)
        s.expunge(vault)
        source = s.get(Resource, b.resource_id)
        source_path = source.path if source is not None else None
        agent_disk = onhost.on_host(ctx, disk)
    repo = repository(ctx, vault, create=False)
    if agent_disk:
        return onhost.fill_new_disk(ctx, run, repo, backup_id, disk_id, size)
    progress = TaskProgress(run)
    made: list[Opened] = []  # the new image, created (O_EXCL) through a checked open

    def remove() -> None:
        for new in made:
            new.remove_created()
            new.close()

    with res_svc.made_from_backup(ctx, run, disk_id, size=lambda: made[0].size(), remove=remove):
        made.append(res_svc.open_resource(ctx, disk_id, create=True))
        new = made[0]
        new.set_size(max(size, repo.disk_image(backup_id).disk_size))  # guide 6.4
        repo.restore_disk(backup_id, new.path, progress=progress, cancel=progress.cancel, truncate=False,
                          target_fd=new.fd)
        new.copy_permissions(source_path)  # (it was made 0600 until complete)
        res_svc.record_identity(ctx, disk_id, new)
    for new in made:
        new.close()



# ------------------------------------------------------------------------------------ export
@dataclass
class ExportStream:
    size: int
    token: str  # names the damage marker of this response (B.EXPORT_DAMAGE_TAG)
    blocks: Iterator[bytes]


def export_stream(ctx: ServiceContext, p: Principal, backup_id: str) -> ExportStream:
    """The raw image of a disk backup, as a stream (beyond the guide: 13.7.6 says CBR cannot download
    backups). Damage that can be seen without reading data (a chunk the index does not know, a pack
    gone or short) refuses the export before its first byte; a chunk that fails its check while
    streaming ends the stream early with the damage marker (``B.export_damage_marker``). Its own
    transaction, short: none is held while the object store is read (services/context.py)."""
    p.require_data_access("exporting a backup (it reads all of its data)")
    with ctx.tx() as s:
        b = get_backup(s, p.project_id, backup_id)
        vault = s.get(Vault, b.vault_id)
        B.check_restorable(b.status, vault.status, "backup")
        if b.resource_type != R.DISK:
            raise InvalidParameter("only disk backups (or one disk of a server backup) can be exported as an image",
                                   code="BackupService.6436")
        s.expunge(vault)
    with engine_errors.translated():
        image = repository(ctx, vault, create=False).disk_image(backup_id)
        bad = [asdict(c) for c in image.unreadable_chunks()]
    if bad:
        raise DataCorruption(f"backup {backup_id} is damaged: {len(bad)} chunk(s) cannot be read; first: chunk "
                             f"{bad[0]['digest']} {B.damaged_chunk_where(bad[0])}: {bad[0]['reason']}; nothing was "
                             "exported (cbr backup verify reports all damage)")
    token = secrets.token_hex(16)

    def blocks() -> Iterator[bytes]:
        damaged = yield from image.blocks()
        if damaged is not None:
            offset = damaged.offsets[0]
            log.warning("export of backup %s stopped at offset %d: %s", backup_id, offset, damaged.reason)
            yield B.export_damage_marker(token, asdict(damaged))[:image.disk_size - offset]

    return ExportStream(image.disk_size, token, blocks())


def abandon_restore(s: Session, task: Task) -> None:
    """A restore or create-disk task whose worker died (kill -9, a crash): the backup is usable again;
    the disks it was restoring are in error saying so (a mix of old and restored data; restoring again
    repairs them); a half-made new disk is removed with its file, as a failed one is."""
    params = task.params or {}
    if task.operation_type == "restore":
        b = s.get(Backup, params.get("backup_id"))
        if b is not None and b.status == B.RESTORING:
            b.status = B.AVAILABLE
        _settle_targets(s, params.get("plan") or [], b.name if b is not None else params.get("backup_id", ""),
                        "its worker stopped (crashed or was killed) part-way")
        return
    d = s.get(Resource, params.get("disk_id"))
    if d is not None and d.status == "restoring" and d.agent_id is not None:
        # its image is on the agent's host, half written: in error until a restore repairs it
        d.status = "error"
        d.status_reason = R.unfinished_restore_reason(params.get("backup_id", ""),
                                                      "its worker stopped (crashed or was killed) part-way", d.type)
        return
    if d is not None and d.status == "restoring":
        path = d.path
        s.delete(d)
        s.flush()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
