"""Task progress: the engine's ``progress(done, total)`` callbacks turned into the progress, cancel and
lease reports of the task that runs them (backups, restores, GC, verify)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from opencbr.domain.errors import CBRError
from opencbr.services import tasks

log = logging.getLogger("opencbr.backups")


class TaskProgress:
    """Adapts the engine's ``progress(done, total)`` to task progress: throttled, and turning a user's
    cancel request, a lost lease or the ``guard``'s error (e.g. storage running out; kept in
    ``stopped_by``) into the engine's ``cancel`` event (never raising in engine threads)."""

    def __init__(self, run: tasks.TaskRun, *, lo: int = 0, hi: int = 99, every: float = 1.0,
                 guard: Callable[[], None] | None = None):
        self.run, self.lo, self.hi, self.every, self.guard = run, lo, hi, every, guard
        self.cancel = threading.Event()
        self.lease_lost = False
        self._stops: list[CBRError] = []  # what the guard raised, shared with the spans
        self._last = 0.0
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        if self.guard is not None and not self.cancel.is_set():  # every call (~10/s): storage fills fast
            try:
                self.guard()
            except CBRError as e:
                self._stops.append(e)
                self.cancel.set()
        now = time.monotonic()
        if now - self._last < self.every:
            return
        with self._lock:
            if now - self._last < self.every:
                return
            self._last = now
            pct = self.lo + (self.hi - self.lo) * (done / total if total else 1)
            try:
                self.run.progress(int(pct))
            except tasks.TaskCancelled:
                self.cancel.set()
            except tasks.LeaseLost:
                self.lease_lost = True
                self.cancel.set()
            except Exception:  # the catalog hiccuped: keep backing up, report next time
                log.exception("cannot report progress of task %s", self.run.task_id)

    def span(self, lo: int, hi: int) -> TaskProgress:
        """A child for one part of the work (e.g. one disk of a server), sharing the cancel event."""
        child = TaskProgress(self.run, lo=lo, hi=hi, every=self.every, guard=self.guard)
        child.cancel, child._stops = self.cancel, self._stops
        return child

    @property
    def stopped_by(self) -> CBRError | None:
        """The guard's error if it stopped the work (e.g. storage running out), else None."""
        return self._stops[0] if self._stops else None
