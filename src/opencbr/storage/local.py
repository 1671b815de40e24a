"""``LocalStore``: an object store in a local directory (``file:///abs/path``).

Atomic writes: the data goes to a hidden temp file in the target directory, is fsynced, and is then
renamed (put) or hard-linked (put_if_absent: ``link(2)`` fails with EEXIST, so exactly one concurrent
creator wins) onto the final name; the directory is fsynced so the new name survives a crash.

fsync policy (measured, see bench/README.md): an fsync per small object costs ~1-3 ms on this ext4,
which is why the engine packs chunks into multi-MiB pack objects, each written with ``sync=True`` by
the session's uploader threads. A ``sync=False`` write is renamed into place at once without fsync;
:meth:`flush` then fsyncs all such files and their directories in one barrier.
"""

from __future__ import annotations

import errno
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Iterator

from ..system.aligned import ALIGN, aligned_buffer, open_direct, pread_direct, round_up, write_direct
from ..system.processes import local_process_gone, process_namespace
from .base import ObjectInfo, ObjectStore, StoreCapabilities

_TMP_PREFIX = ".tmp-"
# Temporaries are named after the writer's PID namespace (not just the host name), so a GC removes those
# of dead writers at once only where their pid is known to mean the same process.
_HOST = process_namespace()


class LocalStore(ObjectStore):
    """Object store rooted at directory ``root`` (created if missing)."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        # fork-safe: reads are open/pread/close; no state is shared with the parent but buffers
        self.capabilities = StoreCapabilities(local_root=self.root, fork_safe=True)
        self._pending_lock = threading.Lock()
        self._pending_files: set[str] = set()
        self._pending_dirs: set[str] = set()
        self._known_dirs: set[str] = set()
        self._views = threading.local()

    # -- helpers -------------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or "\\" in key:
            raise ValueError(f"invalid object key {key!r}")
        parts = key.split("/")
        if any(p in ("", ".", "..") or p.startswith(_TMP_PREFIX) for p in parts):
            raise ValueError(f"invalid object key {key!r}")
        return self.root.joinpath(*parts)

    def _ensure_dir(self, d: Path) -> None:
        s = str(d)
        if s in self._known_dirs:
            return
        if not d.is_dir():
            d.mkdir(parents=True, exist_ok=True)
            # Make the new directory entries durable: fsync each created level's parent.
            p = d
            while True:
                _fsync_dir(p.parent)
                if p.parent == self.root or self.root not in p.parent.parents:
                    break
                p = p.parent
        self._known_dirs.add(s)

    def _write_tmp(self, path: Path, data, sync: bool) -> str:
        self._ensure_dir(path.parent)
        # The writer is named in the temporary name, so a crash's leftovers can be told from writes
        # in progress (see remove_abandoned_writes).
        tmp = str(path.parent / f"{_TMP_PREFIX}{_HOST}-{os.getpid()}-{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            mv = memoryview(data)
            if not write_direct(fd, mv):  # a page-aligned pack buffer skips the page cache
                while mv:
                    n = os.write(fd, mv)
                    mv = mv[n:]
            if sync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quiet(tmp)
            raise
        os.close(fd)
        return tmp

    def _after_write(self, path: Path, sync: bool) -> None:
        if sync:
            _fsync_dir(path.parent)
        else:
            with self._pending_lock:
                self._pending_files.add(str(path))
                self._pending_dirs.add(str(path.parent))

    # -- interface -----------------------------------------------------------------------------
    def put_if_absent(self, key: str, data, *, sync: bool = True) -> bool:
        path = self._path(key)
        if path.exists():
            return False
        tmp = self._write_tmp(path, data, sync)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            _unlink_quiet(tmp)
        self._after_write(path, sync)
        return True

    def remove_abandoned_writes(self, prefix: str, older_than: float) -> int:
        parts = [p for p in prefix.split("/") if p]
        if any(p in (".", "..") for p in parts):
            raise ValueError(f"invalid prefix {prefix!r}")
        base = self.root.joinpath(*parts)
        if not base.is_dir():
            return 0
        removed = 0
        now = time.time()
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if not name.startswith(_TMP_PREFIX):
                    continue
                full = os.path.join(dirpath, name)
                host, _, rest = name[len(_TMP_PREFIX):].partition("-")
                pid = rest.split("-", 1)[0]
                try:
                    gone = local_process_gone(host, int(pid)) if pid.isdigit() else False
                    if gone or now - os.stat(full).st_mtime > older_than:
                        os.unlink(full)
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed

    def put(self, key: str, data, *, sync: bool = True) -> None:
        path = self._path(key)
        tmp = self._write_tmp(path, data, sync)
        try:
            os.rename(tmp, path)
        except BaseException:
            _unlink_quiet(tmp)
            raise
        self._after_write(path, sync)

    def get(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        path = self._path(key)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise KeyError(key) from None
        try:
            if start is None and end is None:
                size = os.fstat(fd).st_size
                return _pread_all(fd, size, 0)
            start = start or 0
            if end is None:
                end = os.fstat(fd).st_size
            return _pread_all(fd, max(0, end - start), start)
        finally:
            os.close(fd)

    def read_view(self, key: str, start: int, end: int) -> memoryview:
        """Direct I/O into this thread's reusable aligned buffer (see ``aligned.py``): the bulk reads
        of restores and verifies neither fill the page cache nor fault in a new buffer per read."""
        path = self._path(key)
        try:
            fd, direct = open_direct(path)
        except FileNotFoundError:
            raise KeyError(key) from None
        try:
            if not direct:
                return memoryview(_pread_all(fd, max(0, end - start), start))
            need = round_up(end) - (start & ~(ALIGN - 1))
            buf = getattr(self._views, "buf", None)
            if buf is None or len(buf) < need:
                buf = self._views.buf = aligned_buffer(max(need, 8 << 20))
            return pread_direct(fd, buf, start, max(start, end))
        finally:
            os.close(fd)

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            st = os.stat(self._path(key))
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def list(self, prefix: str) -> Iterator[tuple[str, int]]:
        # Walk only the deepest directory that the prefix fully names.
        base_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*base_dir.split("/")) if base_dir else self.root
        if not start.is_dir():
            return
        root_len = len(str(self.root)) + 1
        stack = [str(start)]
        while stack:
            d = stack.pop()
            try:
                it = os.scandir(d)
            except FileNotFoundError:
                continue
            with it:
                for e in it:
                    if e.name.startswith(_TMP_PREFIX):
                        continue
                    rel = e.path[root_len:].replace(os.sep, "/")
                    if e.is_dir(follow_symlinks=False):
                        if (rel + "/").startswith(prefix) or prefix.startswith(rel + "/"):
                            stack.append(e.path)
                    elif rel.startswith(prefix):
                        try:
                            yield rel, e.stat(follow_symlinks=False).st_size
                        except FileNotFoundError:
                            continue

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        with self._pending_lock:
            self._pending_files.discard(str(path))

    def flush(self) -> None:
        with self._pending_lock:
            files, dirs = self._pending_files, self._pending_dirs
            self._pending_files, self._pending_dirs = set(), set()
        for f in files:
            try:
                fd = os.open(f, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)
        for d in dirs:
            _fsync_dir(Path(d))

    def url(self) -> str:
        return self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    data = os.pread(fd, size, offset)
    if len(data) == size:
        return data
    parts = [data]
    got = len(data)
    while got < size:
        more = os.pread(fd, size - got, offset + got)
        if not more:
            break
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    except OSError as e:  # some file systems refuse fsync on directories
        if e.errno not in (errno.EINVAL, errno.EBADF):
            raise
    finally:
        os.close(fd)


def _unlink_quiet(p: str) -> None:
    try:
        os.unlink(p)
    except FileNotFoundError:
        pass
