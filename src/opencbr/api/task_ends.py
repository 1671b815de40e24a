"""Wakes this API process's held ``GET /operation-logs/{id}?wait=`` answers when a task ends.

A worker ending a task rings ``doorbell.TASK_ENDS`` when its transaction commits (``services/tasks.finish``).
One thread per API process and catalog listens (``DoorbellListener``) and, at each ring, sets the event that
every held answer waits on; each then reads its task again. So ``cbr ... --wait`` returns as soon as its task
has ended, where it learnt of the end within the API's look interval before (50 ms: half of it on average,
and the looks' catalog reads took CPU from the very task they waited for). Looking every
``LOOK_SECONDS`` stays as the fallback for a ring that is lost (a worker in another network namespace on a
shared SQLite file) and is the only way where the bell cannot be heard.

The thread starts with the first held answer and ends after ``IDLE_SECONDS`` without one.
"""

from __future__ import annotations

import asyncio
import threading
import time

from opencbr.services.doorbell import TASK_ENDS, DoorbellListener

#: How often a held answer looks without a ring: where the bell is heard, and where it is not.
LOOK_SECONDS = 0.5
LOOK_SECONDS_DEAF = 0.05
IDLE_SECONDS = 60.0


class TaskEnds:
    """The ring of one catalog's task ends, as an asyncio event on the API's loop."""

    def __init__(self, catalog_url: str):
        self.catalog_url = catalog_url
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._last_use = 0.0
        self.listening = False

    def event(self) -> asyncio.Event:
        """The event the next ring sets (take it *before* reading the task: a ring after the read is not
        missed). Called on the API's loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            self._last_use = time.monotonic()
            if self._event is None or self._loop is not loop:
                self._loop, self._event = loop, asyncio.Event()
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen, name="task-ends", daemon=True)
                self._thread.start()
            return self._event

    def look_seconds(self) -> float:
        return LOOK_SECONDS if self.listening else LOOK_SECONDS_DEAF

    def _listen(self) -> None:
        bell = DoorbellListener(self.catalog_url, TASK_ENDS)
        self.listening = bell.listening
        try:
            while True:
                rang = bell.wait(IDLE_SECONDS / 4)
                self.listening = bell.listening
                with self._lock:
                    if rang and self._loop is not None:
                        try:
                            self._loop.call_soon_threadsafe(self._pulse)
                        except RuntimeError:  # (that loop is closed: a test's, or the server stopped)
                            self._loop = self._event = None
                    if not rang and time.monotonic() - self._last_use > IDLE_SECONDS:
                        self._thread = None
                        self.listening = False
                        return
        finally:
            bell.close()

    def _pulse(self) -> None:
        """(On the loop.) Wake every held answer; later ones wait for the next ring."""
        with self._lock:
            event, self._event = self._event, asyncio.Event()
        if event is not None:
            event.set()


_by_catalog: dict[str, TaskEnds] = {}
_by_catalog_lock = threading.Lock()


def task_ends(catalog_url: str) -> TaskEnds:
    with _by_catalog_lock:
        ends = _by_catalog.get(catalog_url)
        if ends is None:
            ends = _by_catalog[catalog_url] = TaskEnds(catalog_url)
        return ends
