"""Directories (and new disk images) the agent made for a task, so that the task's failure can take them
away again.

A new file system on this host (guide 6.5) is a directory the agent creates (or finds empty) and a
restore fills. When the restore fails, what it wrote must go, and only that: the agent never deletes a
tree the service names, only one it recorded as made for that very task. ``create_dir`` records
``path -> {task, top, dev, ino}`` in ``<state_dir>/made.json`` (written with fsync and rename before it
answers; ``top`` is the outermost directory it created, or None when ``path`` was there, empty; ``dev``
and ``ino`` identify the directory itself); ``remove_made`` removes the contents of ``path`` -- only if
the directory there is still that one --, then the directories it created, and forgets the record. A record
names one task; a retry of that task may fill the directory again (the restore overwrites), any other
caller is refused. Records older than :data:`KEEP_SECONDS` are dropped: by then the task is long over.

A new disk image (guide 13.4.8: restore to a new server; a disk made from a backup) is written under a
hidden name (:class:`PartialImage`: ``.<name>.opencbr-partial``, no image suffix, so no inventory lists it)
and linked to its own name only once whole. Its partial file is recorded too (``kind`` ``partial-image``):
an agent killed mid-restore left a full-size image of half the data under the name asked for, which its
next inventory listed as an available disk (and the path was taken); now the next start of the agent
removes what a killed one was writing (:func:`discard_partial_images`).

Removal goes through descriptors only: ``path`` is opened through the confinement (below a root, no
symlink followed), and everything below is removed with ``*at`` calls that never follow a symlink
(a symlink is removed as a link) and never enter another file system (a mount below is left alone).
"""

from __future__ import annotations

import os
import stat
import threading
import time

from opencbr.agent import statefiles
from opencbr.engine.errors import Conflict
from opencbr.system.beneath import PathSwapped

MADE_FILE = "made.json"
PARTIAL_SUFFIX = ".opencbr-partial"  # a new image's file while it is written: .<name>.opencbr-partial
PARTIAL_KIND = "partial-image"
RESTORED_KIND = "restored-name"  # a name restore-files wrote for a task (its next attempt may write it again)
#: How long a record of a made directory is kept (a failed task cleans up within minutes).
KEEP_SECONDS = 7 * 24 * 3600
_NOFOLLOW_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class MadeDirs:
    """The record of directories made for tasks (see the module's docstring). Thread-safe."""

    def __init__(self, state_dir: str | None):
        self.path = os.path.join(state_dir, MADE_FILE) if state_dir else None
        self._memory: dict[str, dict] = {}  # (no state directory: kept for this process only)
        self._lock = threading.Lock()

    def _load(self) -> dict[str, dict]:
        if self.path is None:
            return dict(self._memory)
        try:
            data = statefiles.read_json(self.path)
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return {}  # an unreadable record removes nothing: the safe side
        return data if isinstance(data, dict) else {}

    def _save(self, records: dict[str, dict]) -> None:
        if self.path is None:
            self._memory = dict(records)
            return
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        statefiles.write_json(self.path, records)  # (never through a symlink planted at made.json.tmp)

    def record(self, path: str, task: str, top: str | None, identity: tuple[int, int] | None = None,
               kind: str = "dir") -> None:
        """``identity``: (st_dev, st_ino) of the directory made (or found empty) at ``path``; ``kind``: "dir",
        or ``PARTIAL_KIND`` for a new image's partial file."""
        with self._lock:
            now = time.time()
            records = {p: r for p, r in self._load().items() if now - float(r.get("at", 0)) < KEEP_SECONDS}
            records[path] = {"task": task, "top": top, "at": now, **({"kind": kind} if kind != "dir" else {})}
            if identity is not None:
                records[path]["dev"], records[path]["ino"] = identity
            self._save(records)

    def partial_images(self) -> list[str]:
        """The paths of the partial images recorded (what a killed agent was writing)."""
        with self._lock:
            return [p for p, r in self._load().items() if r.get("kind") == PARTIAL_KIND]

    def made_by(self, path: str) -> dict | None:
        with self._lock:
            return self._load().get(path)

    def forget(self, path: str) -> None:
        with self._lock:
            records = self._load()
            if records.pop(path, None) is not None:
                self._save(records)


def clear_dir(dfd: int) -> int:
    """Remove everything below the open directory ``dfd`` (not following symlinks, not entering other
    file systems); the number of entries removed."""
    dev = os.fstat(dfd).st_dev
    removed = 0
    for name in os.listdir(dfd):
        st = os.lstat(name, dir_fd=dfd)
        if stat.S_ISDIR(st.st_mode):
            if st.st_dev != dev:
                continue  # something is mounted there: not ours to remove
            sub = os.open(name, _NOFOLLOW_DIR, dir_fd=dfd)
            try:
                if os.fstat(sub).st_ino != st.st_ino:
                    continue  # swapped while we looked: leave it
                removed += clear_dir(sub)
            finally:
                os.close(sub)
            os.rmdir(name, dir_fd=dfd)
        else:
            os.unlink(name, dir_fd=dfd)
        removed += 1
    return removed


_BY_STATE_DIR: dict[str | None, MadeDirs] = {}
_BY_STATE_DIR_LOCK = threading.Lock()


def made_dirs(state_dir: str | None) -> MadeDirs:
    """The one :class:`MadeDirs` of ``state_dir`` in this process (its lock guards the file)."""
    with _BY_STATE_DIR_LOCK:
        if state_dir not in _BY_STATE_DIR:
            _BY_STATE_DIR[state_dir] = MadeDirs(state_dir)
        return _BY_STATE_DIR[state_dir]


class PartialImage:
    """A new disk image at ``target`` (below a root; the name must be free), written under its hidden
    partial name and linked to ``target`` by :meth:`publish` once whole, or removed by :meth:`discard`.
    ``fd`` is the partial file, open for writing."""

    def __init__(self, confinement, made: MadeDirs, target: str):
        parent, self.name = os.path.split(target)
        self.target, self.made = target, made
        self.partial = f".{self.name}{PARTIAL_SUFFIX}"
        self.partial_path = os.path.join(parent, self.partial)
        self.dfd = confinement.open_dir(parent)  # FileNotFoundError: the directory is missing
        self.fd = -1
        try:
            if _present(self.dfd, self.name):
                raise Conflict(f"{target} exists: a new disk is made at a path nothing holds")
            if _present(self.dfd, self.partial):
                if self.partial_path not in self.made.partial_images():
                    raise Conflict(f"{self.partial_path} exists and is not a partial image of this agent")
                os.unlink(self.partial, dir_fd=self.dfd)  # an earlier attempt's, cut short
            self.made.record(self.partial_path, "", None, kind=PARTIAL_KIND)
            self.fd = os.open(self.partial, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                              0o600, dir_fd=self.dfd)
        except BaseException:
            self.close()
            raise

    def publish(self) -> None:
        """The image whole (synced), under its own name; ``target`` taken meanwhile: ``Conflict``."""
        os.fsync(self.fd)
        try:
            os.link(self.partial, self.name, src_dir_fd=self.dfd, dst_dir_fd=self.dfd, follow_symlinks=False)
        except FileExistsError:
            raise Conflict(f"{self.target} was made by something else while the disk was restored") from None
        os.unlink(self.partial, dir_fd=self.dfd)
        self.made.forget(self.partial_path)

    def discard(self) -> None:
        try:
            os.unlink(self.partial, dir_fd=self.dfd)
        except FileNotFoundError:
            pass
        self.made.forget(self.partial_path)

    def close(self) -> None:
        for fd in (self.fd, self.dfd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.dfd = -1


def _present(dfd: int, name: str) -> bool:
    try:
        os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return False
    return True


def discard_partial_images(confinement, made: MadeDirs) -> list[str]:
    """At the agent's start: remove the partial images a killed agent was writing (none can be in use
    now), each through the confinement and only if it is a regular file. Their paths."""
    removed = []
    for path in made.partial_images():
        parent, name = os.path.split(path)
        try:
            dfd = confinement.open_dir(parent)
        except (OSError, PathSwapped):
            made.forget(path)  # (its directory is gone, or is no longer below a root: nothing to remove)
            continue
        try:
            if stat.S_ISREG(os.lstat(name, dir_fd=dfd).st_mode):
                os.unlink(name, dir_fd=dfd)
                removed.append(path)
        except FileNotFoundError:
            pass
        finally:
            os.close(dfd)
        made.forget(path)
    return removed
