"""A big restore in several processes: this one and forked children, each the whole pipeline
(catalog, creation, fetching, writing) for its share of the entries.

Why processes: the restore is bound by Python's GIL, not by the disk or the CPU -- the thread that
creates files waits for the GIL after every system call while the span workers hand it around, on a
2-core VM about half of all cycles idle (30k-file tree: 3.4 s wall for 3.6 s of CPU). Two processes
have two GILs. Each part posts its written bytes in a shared page (progress); a child hands its result
through a pipe; a cancel or an error kills them. (Forking children only, with this process waiting,
cost a third process's memory.)"""

from __future__ import annotations

import mmap
import os
import pickle
import select
import struct

from ...errors import RestoreCancelled
from ..forked import die_with_parent, exit_reason, kill_and_reap
from .metadata import DirList

# Restores of at least PARALLEL_MIN bytes run in several processes, which share the entries out in
# groups of GROUP_BYTES of file data or GROUP_FILES entries.
PARALLEL_MIN = 64 << 20
GROUP_BYTES = 16 << 20
GROUP_FILES = 256


class ForkedParts:
    """Mixed into :class:`~.restorer.TreeRestore`, which provides ``_restore_part(root_fd, part,
    parts)``, ``tally``, ``cancel``, ``backup_id``, ``processes`` and ``_report()``."""

    _shared: tuple[mmap.mmap, int] | None = None  # restoring in parts: (progress page, this part's slot)
    _in_child = False

    def _parts(self) -> int:
        """How many processes restore: one unless asked for more, the restore is big enough to be
        worth it, ``fork`` exists, and the store is safe to use from a forked child (local files;
        an S3 client's connection pool is not)."""
        if self.processes <= 1 or self.total < PARALLEL_MIN or not hasattr(os, "fork"):
            return 1
        return self.processes if self.cs.fork_safe else 1

    def _restore_parts(self, root_fd: int, parts: int) -> DirList:
        """Restore in ``parts`` processes -- this one and ``parts - 1`` forked children -- each
        :meth:`_restore_part` for its share; this process takes share 0, which also lists the
        directories."""
        import multiprocessing

        shared = mmap.mmap(-1, 8 * (parts + 1))  # bytes written per part, then the next group to claim
        try:
            self._claim_lock = multiprocessing.get_context("fork").Lock()
        except OSError:  # no POSIX semaphores here (e.g. a container without /dev/shm): one process
            self.processes_used = 1
            return self._restore_part(root_fd, 0, 1)
        self._parent_pid = os.getpid()
        children: list[tuple[int, int]] = []
        unread: set[int] = set()  # result pipes still open (closed by _collect at their end)
        try:
            if not self._fork_children(root_fd, parts, shared, children, unread):
                self.processes_used = 1  # could not fork at all: one process
                return self._restore_part(root_fd, 0, 1)
            self._shared = (shared, 0)
            dirs = self._restore_part(root_fd, 0, parts)
            outputs = self._collect(children, shared, unread)
        except BaseException:
            for pid, _r in children:
                kill_and_reap(pid)
            for r in unread:
                os.close(r)
            raise
        finally:
            self._shared = None
        self._merge(children, outputs)
        return dirs

    def _fork_children(self, root_fd: int, parts: int, shared: mmap.mmap, children: list[tuple[int, int]],
                       unread: set[int]) -> bool:
        """Fork parts 1 .. parts-1, each with a result pipe; False if not even one could be forked."""
        for part in range(1, parts):
            r, w = os.pipe()
            try:
                pid = os.fork()
            except OSError:
                os.close(r)
                os.close(w)
                if children:
                    raise
                return False
            if pid == 0:  # the child: never returns
                os.close(r)
                for other in unread:
                    os.close(other)
                self._child(root_fd, part, parts, shared, w)
            os.close(w)
            children.append((pid, r))
            unread.add(r)
        return True

    def _merge(self, children: list[tuple[int, int]], outputs: list[bytearray]) -> None:
        """Reap the children and add their results to ours; raise the first fatal error of any."""
        reaped = [os.wait4(pid, 0) for pid, _r in children]  # (all reaped before any raise)
        statuses = [status for _pid, status, _ru in reaped]
        self.parts_peak_rss = [ru.ru_maxrss * 1024 for _pid, _status, ru in reaped]
        fatal = []
        for (pid, _r), data, status in zip(children, outputs, statuses, strict=True):
            try:
                out = pickle.loads(data)
            except Exception:  # noqa: BLE001 - no (complete) result: the child died
                raise RuntimeError(f"restore process {pid} ended without a result "
                                   f"({exit_reason(status)})") from None
            if "fatal" in out:
                fatal.append(out["fatal"])
            else:
                self.tally.add(out)
        if fatal:
            raise fatal[0]

    @staticmethod
    def _group_full(nbytes: int, entries: int) -> bool:
        """Whether a group of entries holding ``nbytes`` of file data in ``entries`` entries is complete."""
        return nbytes >= GROUP_BYTES or entries >= GROUP_FILES

    def _claim(self, group: int) -> bool:
        """Whether this part restores ``group``: the first part to reach a group takes it. Every part
        passes every group in catalog order, so a part busy with a big group finds the next ones
        taken by the others: the work balances itself (round-robin shares left one part idle for a
        third of the time)."""
        if self._shared is None:
            return True
        shared, _slot = self._shared
        at = 8 * (len(shared) // 8 - 1)
        with self._claim_lock:
            nxt = struct.unpack_from("q", shared, at)[0]
            if nxt != group:
                return False
            struct.pack_into("q", shared, at, group + 1)
            return True

    def _child(self, root_fd: int, part: int, parts: int, shared: mmap.mmap, w: int) -> None:
        code = 0
        try:
            die_with_parent(self._parent_pid)
            self._shared = (shared, part)
            self._in_child = True
            self._restore_part(root_fd, part, parts)
            out = self.tally.result()
        except BaseException as exc:  # noqa: BLE001 - handed to the parent
            code = 1
            out = {"fatal": exc}
        try:
            try:
                data = pickle.dumps(out)
            except Exception as exc:  # noqa: BLE001 - an exception that does not pickle
                data = pickle.dumps({"fatal": RuntimeError(f"restore process failed: {out.get('fatal', exc)!r}")})
            mv = memoryview(data)
            while mv:
                mv = mv[os.write(w, mv):]
        finally:
            os._exit(code)  # no atexit handlers, no finalizers of the parent's objects

    def _collect(self, children: list[tuple[int, int]], shared: mmap.mmap, unread: set[int]) -> list[bytearray]:
        """Read every child's result (closing each pipe at its end and dropping it from ``unread``)
        while reporting their progress; a cancel raises (the caller kills them)."""
        bufs = {r: bytearray() for _pid, r in children}
        poller = select.poll()  # (not select(): a service may hold descriptors above FD_SETSIZE)
        for r in bufs:
            poller.register(r, select.POLLIN)
        while unread:
            for r, _ev in poller.poll(200):
                chunk = os.read(r, 1 << 16)
                if chunk:
                    bufs[r] += chunk
                else:
                    poller.unregister(r)
                    unread.discard(r)
                    os.close(r)
            if self.cancel.is_set():
                raise RestoreCancelled(f"restore of {self.backup_id} was cancelled")
            self._report()
        return [bufs[r] for _pid, r in children]

    def _post_progress(self, written: int) -> int | None:
        """Post this part's bytes written; the total of all parts for the parent to report, None in a
        child (only the parent reports)."""
        shared, slot = self._shared
        struct.pack_into("q", shared, 8 * slot, written)
        if self._in_child:
            return None
        return sum(struct.unpack_from(f"{len(shared) // 8 - 1}q", shared))  # (the last slot: _claim)
