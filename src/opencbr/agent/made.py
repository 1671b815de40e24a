"""Directories the agent made for a task, so that the task's failure can take them away again.

A new file system on this host (guide 6.5) is a directory the agent creates (or finds empty) and a
restore fills. When the restore fails, what it wrote must go, and only that: the agent never deletes a
tree the service names, only one it recorded as made for that very task. ``create_dir`` records
``path -> {task, top}`` in ``<state_dir>/made.json`` (written with fsync and rename before it answers;
``top`` is the outermost directory it created, or None when ``path`` was there, empty); ``remove_made``
removes the contents of ``path``, then the directories it created, and forgets the record. A record
names one task; a retry of that task may fill the directory again (the restore overwrites), any other
caller is refused. Records older than :data:`KEEP_SECONDS` are dropped: by then the task is long over.

Removal goes through descriptors only: ``path`` is opened through the confinement (below a root, no
symlink followed), and everything below is removed with ``*at`` calls that never follow a symlink
(a symlink is removed as a link) and never enter another file system (a mount below is left alone).
"""

from __future__ import annotations

import json
import os
import stat
import threading
import time

MADE_FILE = "made.json"
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
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
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
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(records, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def record(self, path: str, task: str, top: str | None) -> None:
        with self._lock:
            now = time.time()
            records = {p: r for p, r in self._load().items() if now - float(r.get("at", 0)) < KEEP_SECONDS}
            records[path] = {"task": task, "top": top, "at": now}
            self._save(records)

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
