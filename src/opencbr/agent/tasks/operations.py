"""The data operations an agent runs for the service (see the package's docstring).

Every path is opened through the task context's confinement (below the agent's roots, no symlink
followed out, or an allowed block device), again for every task; the engine then reads and writes
only the descriptors opened here.
"""

from __future__ import annotations

import contextlib
import os
import stat
from typing import Callable

from opencbr.engine.disk.backup import backup_disk as engine_backup_disk
from opencbr.engine.disk.restore import restore_disk as engine_restore_disk
from opencbr.engine.disk.source import FileDiskSource
from opencbr.engine.remote.vault import BadRequest, VaultAccess
from opencbr.engine.tree import backup_tree as engine_backup_tree
from opencbr.engine.tree import restore_tree as engine_restore_tree

Operation = Callable[[object, object, dict, memoryview], dict]
LIVE = {"method": "live", "note": "the disks were read while in use: blocks written during the backup may "
                                  "come from different moments"}


def _param(req: dict, name: str, kind: type = str):
    v = req.get(name)
    if not isinstance(v, kind) or (kind is str and not v):
        raise BadRequest(f"the request lacks {name!r}")
    return v


@contextlib.contextmanager
def _point_in_time(ctx, devices: list[str]):
    """``device -> path to read`` and ``describe``: the agent's consistency point when it has one."""
    pit = getattr(ctx, "point_in_time", None)
    if pit is None:
        yield {d: d for d in devices}, dict(LIVE)
        return
    with pit(devices) as view:
        yield {d: view[d] for d in devices}, view.describe


def _granted(ctx, paths: list[str]):
    grant = getattr(ctx.confinement, "granted", None)
    return grant(paths) if grant is not None and paths else contextlib.nullcontext()


# ------------------------------------------------------------------------------------------ backups
def backup_disks(ctx, channel, req: dict, _payload: memoryview) -> dict:
    """One disk (``backup_disk``) or a server's disks (``backup_server``) from one point in time:
    ``disks: [{path, backup_id, parent, meta}]``; each becomes one backup, in order."""
    disks = _param(req, "disks", list)
    vault = VaultAccess.of(req)
    paths = [_param(d, "path") for d in disks]
    results = []
    with _point_in_time(ctx, paths) as (view, describe):
        with _granted(ctx, [view[p] for p in paths if view[p] != p]), vault.chunks(channel) as chunks:
            for d in disks:
                fd = ctx.confinement.open(view[d["path"]], os.O_RDONLY)
                try:
                    src = FileDiskSource(d["path"], fd=fd)
                    try:
                        r = engine_backup_disk(chunks, src, backup_id=_param(d, "backup_id"),
                                               meta={**(d.get("meta") or {}), "consistency": describe},
                                               parent_backup_id=d.get("parent"), full=bool(req.get("full")),
                                               block_size=vault.block_size, cancel=getattr(ctx, "cancel", None), progress=chunks.progress)
                    finally:
                        src.close()
                finally:
                    os.close(fd)
                results.append(r.to_dict())
    return {"disks": results, "consistency": describe}


def backup_tree(ctx, channel, req: dict, _payload: memoryview) -> dict:
    """A directory below the agent's roots: ``path``, ``backup_id``, ``parent``, ``meta``, ``full``.
    Files unchanged since the parent (its catalog, read from the vault) are not read again."""
    path = _param(req, "path")
    vault = VaultAccess.of(req)
    fd = ctx.confinement.open_dir(path)
    try:
        with vault.chunks(channel) as chunks:
            r = engine_backup_tree(chunks, path, backup_id=_param(req, "backup_id"), meta=req.get("meta") or {},
                                   parent_backup_id=req.get("parent"), full=bool(req.get("full")), root_fd=fd,
                                   cancel=getattr(ctx, "cancel", None), progress=chunks.progress)
    finally:
        os.close(fd)
    out = r.to_dict()
    out["warnings"] = [w.to_dict() if hasattr(w, "to_dict") else w for w in r.warnings][:200]
    return out


# ------------------------------------------------------------------------------------------ restores
def restore_disk(ctx, channel, req: dict, _payload: memoryview) -> dict:
    """Backup ``backup_id`` onto ``target``: an existing disk (block device or image file) or, with
    ``create``, a new image file below the roots (made at the backup's size)."""
    target = _param(req, "target")
    backup_id = _param(req, "backup_id")
    vault = VaultAccess.of(req)
    create = bool(req.get("create"))
    flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
    fd = ctx.confinement.open(target, flags, 0o600)
    try:
        with vault.chunks(channel) as chunks:
            if create:
                os.ftruncate(fd, int(chunks.read_manifest(backup_id).header["disk_size"]))
            r = engine_restore_disk(chunks, backup_id, target, target_fd=fd, truncate=not create,
                                    cancel=getattr(ctx, "cancel", None), progress=chunks.progress)
    except BaseException:
        os.close(fd)
        if create:
            _remove_created(ctx, target)
        raise
    os.close(fd)
    return r.to_dict()


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
    vault = VaultAccess.of(req)
    fd = ctx.confinement.makedirs(target)
    try:
        with vault.chunks(channel) as chunks:
            r = engine_restore_tree(chunks, _param(req, "backup_id"), target, subpath=req.get("subpath"),
                                    allow_nonempty=True, target_fd=fd, cancel=getattr(ctx, "cancel", None), progress=chunks.progress)
    finally:
        os.close(fd)
    return _tree_result(r)


def restore_files(ctx, channel, req: dict, _payload: memoryview) -> dict:
    """Single files or directories ``paths`` of a tree backup into directory ``target`` (beside what
    it holds)."""
    target = _param(req, "target")
    paths = _param(req, "paths", list)
    backup_id = _param(req, "backup_id")
    vault = VaultAccess.of(req)
    fd = ctx.confinement.makedirs(target)
    done = []
    try:
        with vault.chunks(channel) as chunks:
            for p in paths:
                r = engine_restore_tree(chunks, backup_id, target, subpath=p, allow_nonempty=True, target_fd=fd,
                                        cancel=getattr(ctx, "cancel", None), progress=chunks.progress)
                done.append({"path": p, **_tree_result(r)})
    finally:
        os.close(fd)
    return {"files": done, "bytes_written": sum(int(d.get("bytes_written", 0)) for d in done)}


def _tree_result(r) -> dict:
    out = r.to_dict()
    if "warnings" in out:
        out["warnings"] = out["warnings"][:200]
    return out


# ------------------------------------------------------------------------------------------ paths
def create_dir(ctx, _channel, req: dict, _payload: memoryview) -> dict:
    """A new directory below the roots (a new file system to restore into); refused if it holds anything."""
    path = _param(req, "path")
    fd = ctx.confinement.makedirs(path)
    try:
        if os.listdir(fd):
            raise BadRequest(f"{path} exists and is not empty")
    finally:
        os.close(fd)
    return {"path": path}


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
}
