"""The data operations an agent runs for the service (see the package's docstring).

Every path is opened through the task context's confinement (below the agent's roots, no symlink
followed out, or an allowed block device), again for every task; the engine then reads and writes
only the descriptors opened here.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from typing import Callable

from opencbr.agent import hooks
from opencbr.agent.context import AgentError
from opencbr.agent.inventory import forget_walks
from opencbr.agent.made import RESTORED_KIND, PartialImage, clear_dir, made_dirs
from opencbr.engine.disk.backup import backup_disk as engine_backup_disk
from opencbr.engine.disk.restore import restore_disk as engine_restore_disk
from opencbr.engine.disk.source import FileDiskSource
from opencbr.engine.diskfs.browse import restore_disk_path
from opencbr.engine.errors import Conflict, InvalidArgument
from opencbr.engine.remote.vault import BadRequest, VaultAccess
from opencbr.engine.tree import backup_tree as engine_backup_tree
from opencbr.engine.tree import restore_tree as engine_restore_tree
from opencbr.engine.tree.common import parse_path
from opencbr.system.heap import free_heap_kept, limit_heap_growth
from opencbr.system.loops import loop_devices_backed_by

Operation = Callable[[object, object, dict, memoryview], dict]
LIVE = {"method": "live", "note": "the disks were read while in use: blocks written during the backup may "
                                  "come from different moments"}


def _param(req: dict, name: str, kind: type = str):
    v = req.get(name)
    if not isinstance(v, kind) or (kind is str and not v):
        raise AgentError("bad_request", f"the request lacks {name!r}")
    return v


def _vault(req: dict) -> VaultAccess:
    try:
        return VaultAccess.of(req)
    except (BadRequest, KeyError, TypeError, ValueError) as e:
        raise AgentError("bad_request", f"the request's vault is not usable: {e}") from None


@contextlib.contextmanager
def _point_in_time(ctx, devices: list[str]):
    """``device -> path to read`` and ``describe``: the agent's consistency point when it has one."""
    pit = getattr(ctx, "point_in_time", None)
    if pit is None:
        yield {d: d for d in devices}, dict(LIVE)
        return
    with pit(devices) as view:
        yield {d: view[d] for d in devices}, view.describe


@contextlib.contextmanager
def _quiesced(ctx, req: dict, backup_id: str):
    """The host's applications held still (``hooks.Quiesce``, docs/app-consistent.md) when the service
    asks ``app_consistent``; yields the Quiesce (read ``achieved``/``reason`` after the block), or None."""
    if not req.get("app_consistent"):
        yield None
        return
    label = f"opencbr {backup_id}"
    try:
        plan = hooks.discover(getattr(ctx.config, "hooks", None) or {})
    except ValueError as e:  # a bad hooks configuration: said in the record, never a silent downgrade
        q = hooks.Quiesce(hooks.HookPlan(), label=label)
        q.reason = f"the agent's hooks configuration is not usable: {e}"
        yield q
        return
    with hooks.Quiesce(plan, timeout=30, hold_timeout=60, label=label, log=getattr(ctx, "log", None)) as q:
        yield q


def _with_app(consistency: dict, q) -> dict:
    """The consistency record with what the hooks achieved (``app``: achieved, reason, hooks)."""
    return consistency if q is None else {**consistency, "app": q.record()}


def _granted(ctx, paths: list[str]):
    grant = getattr(ctx.confinement, "granted", None)
    return grant(paths) if grant is not None and paths else contextlib.nullcontext()


# ------------------------------------------------------------------------------------------ backups
#: A disk is read 4 MiB at a time, and its records are sent in messages of up to 4 MiB: buffers of that
#: size come and go all the time. Served from the heap and kept there between uses (mmap threshold
#: above them, trim threshold above a few of them) they cost nothing to reuse; mapped afresh for each
#: segment, every page was faulted in and zeroed again (a fifth of the agent's CPU on a full backup).
SEGMENT_HEAP_MMAP = 9 << 20
SEGMENT_HEAP_TRIM = 32 << 20
#: A tree backup's records messages (~0.7 MB on the bench tree) and TLS output (256 KiB a write) churn
#: the same way; keeping 16 MiB halved the agent's page faults (system/heap.py).
TREE_HEAP_TRIM = 16 << 20


@contextlib.contextmanager
def _heap_for_segments():
    """The heap settings of a disk backup, for as long as one runs. The agent is long-lived and runs
    tree backups and restores too: with the trim threshold left at 32 MiB, every thread's arena kept
    up to 32 MiB free, and a tree backup after a disk backup peaked at 207-229 MB instead of ~145
    (bench/agent.py: 150 MB now). When the last such operation ends, the threshold goes back
    (system/heap.py)."""
    limit_heap_growth(SEGMENT_HEAP_MMAP)
    with free_heap_kept(SEGMENT_HEAP_TRIM):
        yield


def backup_disks(ctx, channel, req: dict, _payload: memoryview) -> dict:
    """One disk (``backup_disk``) or a server's disks (``backup_server``) from one point in time:
    ``disks: [{path, backup_id, parent, meta}]``; each becomes one backup, in order."""
    disks = _param(req, "disks", list)
    vault = _vault(req)
    paths = [_param(d, "path") for d in disks]
    results = []
    with _heap_for_segments(), contextlib.ExitStack() as snapshot, contextlib.ExitStack() as held:
        q = held.enter_context(_quiesced(ctx, req, _param(disks[0], "backup_id")))
        view, describe = snapshot.enter_context(_point_in_time(ctx, paths))
        app_meta = {}
        if describe.get("method") != "live":  # held across the snapshot only; across the read when live
            held.close()
            app_meta = {} if q is None else {"app_consistency": q.record(restore_material=True)}
        with _granted(ctx, [view[p] for p in paths if view[p] != p]), vault.chunks(channel) as chunks:
            for d in disks:
                fd = ctx.confinement.open(view[d["path"]], os.O_RDONLY)
                try:
                    _drop_cached(fd)
                    src = FileDiskSource(d["path"], fd=fd)
                    try:
                        r = engine_backup_disk(chunks, src, backup_id=_param(d, "backup_id"),
                                               meta={**(d.get("meta") or {}), "consistency": describe, **app_meta},
                                               parent_backup_id=d.get("parent"), full=bool(req.get("full")),
                                               block_size=vault.block_size, cancel=getattr(ctx, "cancel", None), progress=chunks.progress)
                    finally:
                        src.close()
                finally:
                    os.close(fd)
                results.append(r.to_dict())
    out = {"disks": results, "consistency": _with_app(describe, q)}
    if q is not None and not app_meta:  # read live: the restore material exists only now (after post-thaw)
        out["app_consistency"] = q.record(restore_material=True)
    return out


def _drop_cached(fd: int) -> None:
    """A mounted file system writes its files' data to the device without going through the device's
    own page cache: pages of it cached by an earlier read (the previous backup) are stale. Drop them
    so the read gets what the device holds now."""
    if stat.S_ISBLK(os.fstat(fd).st_mode):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


#: Threads reading and cutting files in a tree backup (the engine's default is cores + 1, at least 3):
#: each holds an 8 MiB read buffer, and on the agent the encoders, not the readers, are the slower end.
TREE_READERS = 2


def backup_tree(ctx, channel, req: dict, _payload: memoryview) -> dict:
    """A directory below the agent's roots: ``path``, ``backup_id``, ``parent``, ``meta``, ``full``.
    Files unchanged since the parent (its catalog, read from the vault) are not read again. A first
    backup's progress total is what its walk has listed so far, as on the service (``ResourceTree``):
    no second walk of the tree beside it (~0.6 CPU s of a full backup of 30k files; the agent's CPU
    is what holds its throughput back)."""
    path = _param(req, "path")
    vault = _vault(req)
    exclude = [_below(path, e) for e in req.get("exclude") or []]
    fd = ctx.confinement.open_dir(path)
    try:
        # no snapshot of a tree: the applications are held across the whole read
        with free_heap_kept(TREE_HEAP_TRIM), _quiesced(ctx, req, _param(req, "backup_id")) as q, \
                vault.chunks(channel) as chunks:
            r = engine_backup_tree(chunks, path, backup_id=_param(req, "backup_id"), meta=req.get("meta") or {},
                                   parent_backup_id=req.get("parent"), full=bool(req.get("full")), root_fd=fd,
                                   exclude=exclude, workers=TREE_READERS, listing_total=True,
                                   cancel=getattr(ctx, "cancel", None), progress=chunks.progress)
    finally:
        os.close(fd)
    out = r.to_dict()
    out["warnings"] = [w.to_dict() if hasattr(w, "to_dict") else w for w in r.warnings][:200]
    if q is not None:  # final only after post-thaw, when the manifest is written: the service keeps it
        out["app"] = q.record()
        out["app_consistency"] = q.record(restore_material=True)
    return out


def _below(root: str, path: str) -> str:
    """An excluded path (absolute, below the backed-up directory) relative to that directory."""
    rel = os.path.relpath(os.path.normpath(path), os.path.normpath(root)) if isinstance(path, str) else ".."
    if rel == "." or rel.startswith(".."):
        raise AgentError("bad_request", f"the excluded path {path!r} is not below {root}")
    return rel


# ------------------------------------------------------------------------------------------ restores
def restore_disk(ctx, channel, req: dict, _payload: memoryview) -> dict:
    """Backup ``backup_id`` onto ``target``: an existing disk (block device or image file) or, with
    ``create``, a new image file below the roots (made at the backup's size, or ``size`` if larger),
    written under a hidden name and given its own only once whole (``made.PartialImage``)."""
    target = _param(req, "target")
    backup_id = _param(req, "backup_id")
    vault = _vault(req)
    image = _new_image(ctx, target) if req.get("create") else None
    fd = image.fd if image is not None else _open_disk(ctx, target)
    try:
        with vault.chunks(channel) as chunks:
            if image is not None:
                size = req.get("size") if isinstance(req.get("size"), int) else 0
                os.ftruncate(fd, max(size, int(chunks.manifest_header(backup_id)["disk_size"])))
            r = engine_restore_disk(chunks, backup_id, target, target_fd=fd, truncate=image is None,
                                    cancel=getattr(ctx, "cancel", None), progress=chunks.progress)
            record = req.get("app_consistency")
            if not record and req.get("source_path"):  # a snapshot's record is in the manifest's meta
                record = (chunks.manifest_header(backup_id).get("meta") or {}).get("app_consistency")
        restored = os.fstat(fd)  # (a hard link of the partial image keeps its inode: the restored disk's)
        out = r.to_dict() if image is None else {**r.to_dict(), "size": restored.st_size}
        if image is not None:
            image.publish()
    except BaseException:
        if image is not None:
            image.discard()
        raise
    finally:
        if image is not None:
            image.close()
        else:
            os.close(fd)
    if image is not None:
        forget_walks()
    if record and req.get("source_path"):  # its data directories start as base backups (docs/app-consistent.md)
        out["prepared"] = hooks.prepare_restored_disk(record, req["source_path"], target,
                                                      _mount_dir(ctx), restored=restored)
    return out


def _new_image(ctx, target: str) -> PartialImage:
    try:
        return PartialImage(ctx.confinement, made_dirs(_state_dir(ctx)), target)
    except FileNotFoundError:  # (its own message names the path relative to the root)
        raise AgentError("not_found", f"the directory {os.path.dirname(target)} does not exist on this host") from None


def _open_disk(ctx, target: str) -> int:
    """An existing disk, open for writing, refused while in use (nothing written)."""
    try:
        fd = ctx.confinement.open(target, os.O_RDWR, 0o600)
    except FileNotFoundError:  # (its own message names the path relative to the root)
        raise AgentError("not_found", f"{target} does not exist on this host") from None
    except OSError as e:
        if e.errno != errno.EBUSY:
            raise
        # a device opened exclusively: the kernel refuses while it is mounted or claimed; nothing written
        raise AgentError("in_use", f"{target} is in use on this host (mounted, or held by another program): "
                         "unmount it or stop what holds it, then restore again; nothing was written to it") from None
    loops = loop_devices_backed_by(fd)
    if loops:  # an image attached (and maybe mounted): writing under its file system corrupts it
        os.close(fd)
        raise AgentError("in_use", f"{target} is attached to {', '.join(loops)} on this host: detach it "
                         "(umount, losetup -d), then restore again; nothing was written to it")
    return fd


def _mount_dir(ctx) -> str:
    state_dir = getattr(getattr(ctx, "config", None), "state_dir", None)
    return os.path.join(state_dir, "mnt") if state_dir else tempfile.mkdtemp(prefix="opencbr-mnt-")


def _remove_created(ctx, path: str) -> None:
    parent, name = os.path.split(path)
    try:
        dfd = ctx.confinement.open_dir(parent)
    except OSError:
        return
    try:
        os.unlink(name, dir_fd=dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def restore_tree(ctx, channel, req: dict, _payload: memoryview) -> dict:
    """Backup ``backup_id`` into directory ``target`` (created below the roots if missing), the whole
    tree or one ``subpath``; what the target holds is merged and overwritten (the original directory)."""
    target = _param(req, "target")
    vault = _vault(req)
    backup_id = _param(req, "backup_id")
    fd = ctx.confinement.makedirs(target)
    try:
        with vault.chunks(channel) as chunks:
            r = engine_restore_tree(chunks, backup_id, target, subpath=req.get("subpath"),
                                    allow_nonempty=True, target_fd=fd, cancel=getattr(ctx, "cancel", None), progress=chunks.progress)
            record = req.get("app_consistency")
            if not record and req.get("source_path"):  # a snapshot's record is in the manifest's meta
                record = (chunks.manifest_header(backup_id).get("meta") or {}).get("app_consistency")
        forget_walks()
        out = _tree_result(r)
        if record and req.get("source_path") and not req.get("subpath"):
            # data directories that start as base backups (PostgreSQL: backup_label and the backup's WAL),
            # reached below the target's descriptor
            out["prepared"] = hooks.prepare_restored_tree(record, req["source_path"], target, target_fd=fd)
    finally:
        os.close(fd)
    return out


def restore_files(ctx, channel, req: dict, _payload: memoryview) -> dict:
    """Single files or directories ``paths`` of a backup into directory ``target`` (beside what it
    holds): of a tree backup, or of the file systems inside a disk backup (``/p1/etc/hosts``, as
    browsing names them), read from the disk's blocks as the service's own restore-files does."""
    target = _param(req, "target")
    paths = _param(req, "paths", list)
    backup_id = _param(req, "backup_id")
    vault = _vault(req)
    fd = ctx.confinement.makedirs(target)
    done = []
    try:
        with vault.chunks(channel) as chunks:
            disk = chunks.manifest_header(backup_id).get("type") != "tree"
            if not disk:  # (a disk backup's file is refused by restore_disk_path itself)
                task = req.get("made_by") if isinstance(req.get("made_by"), str) and req.get("made_by") else None
                _tree_names_free(fd, target, paths, made_dirs(_state_dir(ctx)) if task else None, task)
            for p in paths:
                if disk:
                    r = restore_disk_path(chunks, backup_id, p, target, target_fd=fd)
                else:
                    r = engine_restore_tree(chunks, backup_id, target, subpath=p, allow_nonempty=True,
                                            target_fd=fd, cancel=getattr(ctx, "cancel", None),
                                            progress=chunks.progress)
                done.append({"path": p, **_tree_result(r)})
    finally:
        os.close(fd)
    return {"files": done, "bytes_written": sum(int(d.get("bytes_written", 0)) for d in done)}


def _tree_names_free(fd: int, target: str, paths: list, made=None, task: str | None = None) -> None:
    """Nothing restored file by file lands on what the host holds: each path of a tree backup goes to
    ``target/<its name>`` (the whole tree, ``/``, straight into ``target``, and alone), and the engine,
    asked to restore beside what is there, would replace a file or link at that name and merge into a
    directory. Checked for every path before anything is written, as the service checks its own
    destinations. With ``task`` (the service's task id) the names about to be written are recorded for it
    first (``made``, agent/made.py): the task's next attempt (its worker was lost) may write over its own
    names again, no other task may."""
    names: set[bytes] = set()
    mine: list[str] = []
    for p in paths:
        try:
            if not isinstance(p, str):
                raise InvalidArgument("paths must be strings")
            name = parse_path(p).rsplit(b"/", 1)[-1]
        except InvalidArgument as e:
            raise AgentError("bad_request", str(e)) from None
        if not name:
            if len(paths) > 1 or (os.listdir(fd) and not _made_for(made, target, task)):
                raise Conflict(f"{target} is not empty: the whole backup (/) is restored only into an empty "
                               "directory, and alone")
            mine.append(target)
            continue
        where = os.path.join(target, os.fsdecode(name))
        if name in names:
            raise Conflict(f"two of the paths would both be restored as {where}")
        try:
            os.lstat(name, dir_fd=fd)
            taken = not _made_for(made, where, task)
        except FileNotFoundError:
            taken = False
        if taken:
            raise Conflict(f"{where} already exists")
        names.add(name)
        mine.append(where)
    if made is not None and task:
        for where in mine:
            made.record(where, task, None, kind=RESTORED_KIND)


def _made_for(made, path: str, task: str | None) -> bool:
    """``path`` was written by an earlier attempt of ``task``."""
    return made is not None and bool(task) and (made.made_by(path) or {}).get("task") == task


def _tree_result(r) -> dict:
    out = r.to_dict()
    if "warnings" in out:
        out["warnings"] = out["warnings"][:200]
    return out


# ------------------------------------------------------------------------------------------ paths
def create_dir(ctx, _channel, req: dict, _payload: memoryview) -> dict:
    """A new directory below the roots (a new file system to restore into); refused if it holds anything,
    unless it is the one made for this very task (``made_by``: a retry). Recorded as made for
    ``made_by`` so that ``remove_made`` can take it away if the task fails (agent/made.py)."""
    path = _param(req, "path")
    task = req.get("made_by") if isinstance(req.get("made_by"), str) and req.get("made_by") else None
    made = made_dirs(_state_dir(ctx))
    created: list[str] = []
    fd = ctx.confinement.makedirs(path, created=created)
    try:
        mine = task is not None and (made.made_by(path) or {}).get("task") == task
        if os.listdir(fd) and not mine:
            raise AgentError("not_empty", f"{path} exists and is not empty")
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if task is not None and not mine:
        made.record(path, task, created[0] if created else None, (st.st_dev, st.st_ino))
    return {"path": path, "created": bool(created)}


def remove_made(ctx, _channel, req: dict, _payload: memoryview) -> dict:
    """Take away directory ``path`` made by ``create_dir`` for task ``made_by`` and what was written in
    it (the task failed): its contents, then the directories ``create_dir`` created; a directory that
    was there, empty, stays. Refused for a path not recorded as made for that task."""
    path = _param(req, "path")
    task = _param(req, "made_by")
    made = made_dirs(_state_dir(ctx))
    record = made.made_by(path)
    if record is None or record.get("task") != task:
        raise AgentError("refused", f"{path} was not made by this agent for task {task}: nothing removed")
    try:
        fd = ctx.confinement.open_dir(path)
    except FileNotFoundError:
        made.forget(path)
        return {"removed": 0}
    try:
        st = os.fstat(fd)
        if "ino" in record and (st.st_dev, st.st_ino) != (record.get("dev"), record.get("ino")):
            # another directory was moved to that name since (whoever may rename in its parent): what
            # it holds was never written for the task; nothing is removed
            made.forget(path)
            raise AgentError("refused", f"{path} is no longer the directory made for task {task} (it was "
                                        "replaced): nothing removed")
        removed = clear_dir(fd)
    finally:
        os.close(fd)
    top = record.get("top")
    if isinstance(top, str) and (top == path or path.startswith(top.rstrip("/") + "/")):
        at = path
        while True:  # the directories create_dir made, innermost first, each only if empty
            _remove_empty_dir(ctx, at)
            if at == top:
                break
            at = os.path.dirname(at)
    made.forget(path)
    return {"removed": removed}


def _remove_empty_dir(ctx, path: str) -> None:
    parent, name = os.path.split(path)
    dfd = ctx.confinement.open_dir(parent)
    try:
        os.rmdir(name, dir_fd=dfd)
    except OSError:
        pass  # not empty (someone else's now) or gone: left as it is
    finally:
        os.close(dfd)


def _state_dir(ctx) -> str | None:
    return getattr(getattr(ctx, "config", None), "state_dir", None)


def remove_disk(ctx, _channel, req: dict, _payload: memoryview) -> dict:
    """Remove a disk-image file the service made here that it no longer wants (a server made from an image
    whose later disks failed): by name below the roots; a directory is never removed."""
    _remove_created(ctx, _param(req, "path"))
    return {}


def probe(ctx, _channel, req: dict, _payload: memoryview) -> dict:
    """What is at ``path``: ``kind`` (disk/dir), ``size`` (a disk's), and its identity."""
    path = _param(req, "path")
    if req.get("type") == "dir":
        fd = ctx.confinement.open_dir(path)
    else:
        fd = ctx.confinement.open(path, os.O_RDONLY)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            return {"kind": "dir", "size": 0, "identity": {"dev": st.st_dev, "ino": st.st_ino}}
        size = os.lseek(fd, 0, os.SEEK_END) if stat.S_ISBLK(st.st_mode) else st.st_size
        return {"kind": "disk", "size": size, "identity": {"dev": st.st_dev, "ino": st.st_ino,
                                                           "rdev": st.st_rdev}}
    finally:
        os.close(fd)


OPERATIONS: dict[str, Operation] = {
    "backup_disk": backup_disks,
    "backup_server": backup_disks,
    "backup_tree": backup_tree,
    "restore_disk": restore_disk,
    "restore_tree": restore_tree,
    "restore_files": restore_files,
    "create_dir": create_dir,
    "probe": probe,
    "remove_disk": remove_disk,
    "remove_made": remove_made,
}
