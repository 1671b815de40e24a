"""File-level work on backups (guide 6.5 and beyond 13.2.15): create a new file system from a
file-system backup, browse any backup's files, and restore single files or directories — from
file-system backups and from disk backups whose image holds ext or FAT file systems."""

from __future__ import annotations

import os

from sqlalchemy.orm import Session

from opencbr.catalog.models import Backup, Resource, Task, Vault
from opencbr.domain import backup as B
from opencbr.domain import resource as R
from opencbr.domain.errors import CBRError, InvalidParameter, StateConflict
from opencbr.domain.names import unshown_name
from opencbr.engine import OperationCancelled
from opencbr.engine.errors import Missing
from opencbr.providers.agent import AgentTaskFailed
from opencbr.providers.base import Opened
from opencbr.services import engine_errors, onhost, tasks
from opencbr.services import resources as res_svc
from opencbr.services.agents import registry as agent_registry
from opencbr.services.agents import targets as agent_targets
from opencbr.services.agents.poll import NO_AGENT
from opencbr.services.context import ServiceContext
from opencbr.services.lookups import get_backup
from opencbr.services.principal import Principal
from opencbr.services.progress import TaskProgress
from opencbr.services.repositories import repository


def _usable_backup(s, p: Principal, backup_id: str) -> tuple[Backup, Vault]:
    b = get_backup(s, p.project_id, backup_id)
    vault = s.get(Vault, b.vault_id)
    B.check_restorable(b.status, vault.status, "backup")
    return b, vault


def _new_directory(s: Session, ctx: ServiceContext, p: Principal, path: object, *,
                   may_exist_empty: bool = True) -> str:
    """A directory the service will create and fill: absolute, inside the allowed roots, not yet used."""
    if not isinstance(path, str) or not os.path.isabs(path):
        raise InvalidParameter("path must be an absolute directory path", code="BackupService.6501")
    real = res_svc.authorised_path(s, ctx, p, path)
    there = ctx.providers.default.path_state(real)
    if there.exists:
        if not (may_exist_empty and there.empty_directory):
            raise StateConflict(f"{path} already exists and is not an empty directory", code="BackupService.6502")
    elif not there.parent_is_directory:
        raise InvalidParameter(f"the parent directory of {path} does not exist", code="BackupService.6503")
    return real


# ------------------------------------------------------------------------------------ new file system
def create_file_system_from_backup(s: Session, ctx: ServiceContext, p: Principal, backup_id: str, *, name: str,
                                   path: str, az: str | None = None, agent_id: str | None = None) -> tuple[str, str]:
    """Guide 6.5: a new file system (directory ``path``; with ``agent_id``, on that agent's host) with the
    backup's data, registered as a resource; it is ``restoring`` until the data is in, then ``available``.
    Returns (task id, fs id)."""
    p.require_write()
    R.check_resource_name(name)
    real = _new_directory(s, ctx, p, path) if agent_id is None else None
    now = ctx.now()
    b, vault = _usable_backup(s, p, backup_id)
    if b.resource_type != R.FILE_SYSTEM:
        raise InvalidParameter("a new file system is created from a file-system backup", code="BackupService.6504")
    zone = az or b.resource_az or ctx.settings.availability_zones[0]
    if zone not in ctx.settings.availability_zones:
        raise InvalidParameter(f"availability zone {zone!r} does not exist")
    description = f"created from backup {b.name} ({b.id})"
    if agent_id is not None:  # the agent makes the directory (13.4.8: on the same or another host)
        fs = agent_targets.new_file_system(s, ctx, p, agent_id, path, name=name, size=b.logical_bytes, zone=zone,
                                           description=description)
    else:
        res_svc.check_path_free(s, ctx, p, real)
        fs = Resource(project_id=p.project_id, type=R.FILE_SYSTEM, name=name, path=real, size_bytes=b.logical_bytes,
                      region=ctx.settings.region, availability_zone=zone, status="restoring",
                      description=description, host=ctx.settings.host_group)  # the path was checked on this machine
        s.add(fs)
        s.flush()
    task = tasks.new_task(s, project_id=p.project_id, operation_type="create_fs", now=now, vault_id=vault.id,
                          vault_name=vault.name, resource_id=fs.id, resource_name=name,
                          resource_type=R.FILE_SYSTEM, provider_id=R.PROVIDER_ID[R.FILE_SYSTEM],
                          request_id=p.request_id, params={"backup_id": b.id, "fs_id": fs.id},
                          extra_info={"restore": {"backup_id": b.id, "backup_name": b.name,
                                                  "target_resource_id": fs.id, "target_resource_name": name}})
    return task.id, fs.id


def run_create_fs(ctx: ServiceContext, run: tasks.TaskRun) -> None:
    backup_id, fs_id = run.params["backup_id"], run.params["fs_id"]
    with ctx.tx() as s:
        b, fs = s.get(Backup, backup_id), s.get(Resource, fs_id)
        if b is None or fs is None:
            raise CBRError("the backup or the new file system no longer exists", code="BackupService.6505")
        vault = s.get(Vault, b.vault_id)
        s.expunge(vault)
        agent_fs = onhost.on_host(ctx, fs)
    if agent_fs:
        return onhost.fill_new_file_system(ctx, run, repository(ctx, vault, create=False), backup_id, fs_id)
    progress = TaskProgress(run)
    made: list[Opened] = []  # the directory, made (or found empty) through a checked open
    restored: list[int] = []  # the restore's count of the bytes its files hold (no walk of the new tree)

    def remove() -> None:
        for new in made:
            new.remove_created()
            new.close()

    with res_svc.made_from_backup(ctx, run, fs_id, size=lambda: restored[0] if restored else made[0].measure()[0],
                                  remove=remove):
        made.append(res_svc.open_resource(ctx, fs_id, create=True))
        result = repository(ctx, vault, create=False).restore(backup_id, made[0].path, progress=progress,
                                                              cancel=progress.cancel, target_fd=made[0].fd)
        restored.append(result.file_bytes)
        res_svc.record_identity(ctx, fs_id, made[0])
    for new in made:
        new.close()
    run.set_extra(restore_result={"files": result.files, "dirs": result.dirs, "bytes_written": result.bytes_written,
                                  "processes": result.processes,
                                  "warnings": [w.to_dict() for w in result.warnings][:50]})


def abandon_create_fs(s: Session, task: Task) -> None:
    fs = s.get(Resource, (task.params or {}).get("fs_id"))
    if fs is not None and fs.status == "restoring":
        fs.status = "error"


# ------------------------------------------------------------------------------------ browse
def _browsable(s, p: Principal, backup_id: str) -> tuple[Backup, Vault]:
    b, vault = _usable_backup(s, p, backup_id)
    if b.resource_type == R.SERVER:
        raise InvalidParameter("a server backup holds one backup per disk: browse one of its children",
                               code="BackupService.6506")
    s.expunge(vault)
    return b, vault


def list_files(ctx: ServiceContext, p: Principal, backup_id: str, path: str = "/") -> list[dict]:
    """The entries of a directory inside a backup, without restoring it (beyond guide 13.2.15). File-system
    backups list their tree; disk backups list their partitions, then the files of ext and FAT ones.
    Its own transaction, short: none is held while the object store is read (services/context.py)."""
    p.require_data_access("browsing the files of a backup")
    if not isinstance(path, str) or "\x00" in path:
        raise InvalidParameter("path must be a string")
    with ctx.tx() as s:
        b, vault = _browsable(s, p, backup_id)
    with engine_errors.translated():
        repo = repository(ctx, vault, create=False)
        entries = repo.list_dir(b.id, _stored_path(repo, b, path or "/"))
    return [e.to_dict() for e in entries]


def _stored_path(repo, b: Backup, path: str) -> str:
    """``path`` as the backup holds it. A name that is not UTF-8 is shown with each undecodable byte as
    ``\\xNN`` (domain/names.py: JSON cannot carry it otherwise); a path written that way,
    as a listing showed it, means those bytes -- unless the backup holds the path as written (a name with
    a real backslash and x in it)."""
    if "\\x" not in path:
        return path
    raw = unshown_name(path)
    if raw == path:
        return path
    try:
        repo.lookup(b.id, path)
        return path
    except Missing:
        pass
    try:
        repo.lookup(b.id, raw)
    except Missing:
        return path  # (not there either way: the caller says so with the path as given)
    return raw


# ------------------------------------------------------------------------------------ single files
def restore_files(ctx: ServiceContext, p: Principal, backup_id: str, paths: list[str], destination: str,
                  agent_id: str | None = None) -> str:
    """Restore files or directories of a backup into ``destination`` (each as ``destination/<name>``;
    with ``agent_id``, on that agent's host), leaving the original resource alone. Refuses to overwrite
    what is there. Its own transactions, short ones: none is held while the object store is read
    (services/context.py)."""
    p.require_write()
    if not isinstance(paths, list) or not paths or not all(isinstance(x, str) and x for x in paths):
        raise InvalidParameter("paths must be a non-empty list of paths inside the backup", code="BackupService.6507")
    if not isinstance(destination, str) or not os.path.isabs(destination):
        raise InvalidParameter("destination_path must be an absolute directory path", code="BackupService.6501")
    with ctx.tx() as s:
        b, _vault = _browsable(s, p, backup_id)
        tree = b.resource_type == R.FILE_SYSTEM
    with engine_errors.translated():
        repo = repository(ctx, _vault, create=False)
        paths = [_stored_path(repo, b, x) for x in paths]
    with ctx.tx() as s:
        source = s.get(Resource, b.resource_id)
        host_resource = source.id if source is not None and onhost.on_host(ctx, source) else None
        if agent_id is not None:  # onto another host (13.4.8): that agent writes them
            host_resource = agent_targets.host_resource(s, ctx, p, agent_id)
        elif host_resource is not None and source.agent_id is None:  # said now, with the way out, not by a task
            raise StateConflict(f"{source.name}: {source.status_reason or 'its agent was unregistered'}; restore the "
                                "files onto another agent's host (agent_id; cbr backup restore-files --agent AGENT)",
                                code=NO_AGENT)
    if host_resource is not None:  # onto the agent's host the backup was read on: its roots decide there
        # (said here, not by the agent: a NUL or a 256-byte name was a queued task that failed there)
        destination = agent_registry.normal_path(destination, "destination_path")
        with ctx.tx() as s:
            agent_targets.check_destination(s, host_resource, destination)
            if tree:
                agent_targets.check_files_never_over(s, host_resource)
        return _restore_files_on_host(ctx, p, backup_id, paths, destination, host_resource)
    with ctx.tx() as s:
        dest = res_svc.authorised_path(s, ctx, p, destination)
        res_svc.check_path_free(s, ctx, p, dest, target=True)
    provider = ctx.providers.default
    there = provider.path_state(dest)
    if there.exists and not there.is_directory:
        raise StateConflict(f"{destination} exists and is not a directory", code="BackupService.6502")
    if not there.exists and not there.parent_is_directory:
        raise InvalidParameter(f"the parent directory of {destination} does not exist", code="BackupService.6503")
    if tree and there.exists and not there.empty_directory and any(_whole_tree(x) for x in paths):
        # (the whole tree of a file-system backup goes straight into the destination, not into
        # destination/root as a disk backup's /: a file there of the same name was replaced)
        raise StateConflict(f"{destination} is not empty: the whole backup (/) is restored only into an empty or "
                            "new directory", code="BackupService.6508")
    names = [os.path.basename(x.rstrip("/")) or "root" for x in paths]
    clashes = [n for n in names if provider.path_state(os.path.join(dest, n)).exists]
    if clashes:
        raise StateConflict(f"{os.path.join(destination, clashes[0])} already exists; choose another destination",
                            code="BackupService.6508")
    # the destination was checked here: a worker of this host group restores
    return _queue_restore_files(ctx, p, backup_id, paths, dest, required_host=ctx.settings.host_group)


def _whole_tree(path: str) -> bool:
    """Whether a path inside a backup names its root (``/``, ``/.``, ``//``)."""
    return not [c for c in path.split("/") if c not in ("", ".")]


def _restore_files_on_host(ctx: ServiceContext, p: Principal, backup_id: str, paths: list[str], dest: str,
                           resource_id: str) -> str:
    # the agent of ``resource_id`` writes them: any worker can drive it
    return _queue_restore_files(ctx, p, backup_id, paths, dest, params={"host_resource_id": resource_id})


def _queue_restore_files(ctx: ServiceContext, p: Principal, backup_id: str, paths: list[str], dest: str, *,
                         required_host: str | None = None, params: dict | None = None) -> str:
    """The restore-files task, once the backup holds every path (checked before anything is queued)."""
    now = ctx.now()
    with ctx.tx() as s:
        b, vault = _browsable(s, p, backup_id)
    with engine_errors.translated():
        _check_paths_exist(repository(ctx, vault, create=False), b, paths)
    host = {} if required_host is None else {"required_host": required_host}
    with ctx.tx() as s:
        task = tasks.new_task(s, project_id=p.project_id, operation_type="restore_files", now=now,
                              vault_id=vault.id, vault_name=vault.name, resource_id=b.resource_id,
                              resource_name=b.resource_name, resource_type=b.resource_type,
                              provider_id=R.PROVIDER_ID.get(b.resource_type, ""), request_id=p.request_id,
                              params={"backup_id": b.id, "paths": paths, "destination": dest, **(params or {})},
                              extra_info={"restore": {"backup_id": b.id, "backup_name": b.name, "paths": paths,
                                                      "destination_path": dest}}, **host)
        return task.id


def _run_restore_files_on_host(ctx: ServiceContext, run: tasks.TaskRun, repo, b: Backup) -> None:
    link = onhost.link_to(ctx, run.params["host_resource_id"])
    with ctx.tx() as s:
        provider = ctx.providers.for_resource(s.get(Resource, run.params["host_resource_id"]))
    progress = TaskProgress(run)
    try:
        r = provider.restore_files(repo, link.connect, project_id=link.project_id, backup_id=b.id,
                                   paths=run.params["paths"], target=run.params["destination"],
                                   cancel=progress.cancel, bandwidth=link.bandwidth, progress=progress,
                                   made_by=run.task_id, agent_id=link.agent_id)
    except AgentTaskFailed as e:
        if progress.cancel.is_set():
            raise tasks.TaskCancelled(run.task_id) from None
        raise onhost.agent_error(e) from None
    run.set_extra(restore_result={"bytes_written": int(r.get("bytes_written", 0)),
                                  "destination_path": run.params["destination"]})


def _check_paths_exist(repo, b: Backup, paths: list[str]) -> None:
    """A path that is not in the backup is the caller's mistake: say so now (404), not in a failed task."""
    repo.lookup(b.id, *paths)


def run_restore_files(ctx: ServiceContext, run: tasks.TaskRun) -> None:
    with ctx.tx() as s:
        b = s.get(Backup, run.params["backup_id"])
        if b is None:
            raise CBRError("the backup no longer exists", code="BackupService.6110")
        vault = s.get(Vault, b.vault_id)
        s.expunge(vault)
    repo = repository(ctx, vault, create=False)
    if run.params.get("host_resource_id"):
        return _run_restore_files_on_host(ctx, run, repo, b)
    dest = run.params["destination"]
    progress = TaskProgress(run)
    written = 0
    try:
        with res_svc.open_target_directory(ctx, dest) as target:  # checked again, made if missing
            for i, path in enumerate(run.params["paths"]):
                span = progress.span(int(99 * i / len(run.params["paths"])),
                                     int(99 * (i + 1) / len(run.params["paths"])))
                r = repo.restore_path(b.id, path, dest, progress=span, cancel=progress.cancel, target_fd=target.fd)
                written += getattr(r, "bytes_written", 0)
    except OperationCancelled:
        raise tasks.TaskCancelled(run.task_id) from None
    run.set_extra(restore_result={"bytes_written": written, "destination_path": dest})
