"""How an idle worker notices new tasks quickly without loading the catalog.

On SQLite every transaction of the service takes the write lock up front (``BEGIN IMMEDIATE``, see
``catalog/db.py``), so claiming on every poll would make idle workers compete with the API for it. The
poller instead asks a read-only connection, which never blocks a writer in WAL mode, whether a task this
worker may serve is waiting, and only then does the worker try to claim. On PostgreSQL the claim itself
(``FOR UPDATE SKIP LOCKED``) is already cheap, so the worker always tries.

Between looks an idle worker waits on the doorbell (``services/doorbell.py``'s ``DoorbellListener``): a
queued task wakes it at once; the poll interval is only the fallback.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from urllib.parse import quote

from opencbr.catalog.db import is_sqlite
from opencbr.services.context import ServiceContext

log = logging.getLogger("opencbr.worker")

#: Even when the cheap check says "nothing", try a real claim this often (a safety net).
CLAIM_AT_LEAST_EVERY = 5.0

_WAITING = "SELECT 1 FROM tasks WHERE status = 'waiting' AND required_host IN ('', ?) LIMIT 1"


class TaskPoller:
    def __init__(self, ctx: ServiceContext, host: str):
        url = ctx.settings.effective_catalog_url
        self.host = host
        self.path = url.split("///", 1)[1] if is_sqlite(url) and "///" in url else ""
        self._conn: sqlite3.Connection | None = None
        self._last_claim = 0.0

    def maybe_work(self) -> bool:
        """True when a waiting task for this worker may exist (or when it cannot tell)."""
        if not self.path or self.path == ":memory:":
            return True
        now = time.monotonic()
        if now - self._last_claim >= CLAIM_AT_LEAST_EVERY:
            self._last_claim = now
            return True
        try:
            if self._conn is None:
                self._conn = sqlite3.connect(f"file:{quote(self.path)}?mode=ro", uri=True, timeout=5,
                                             isolation_level=None, check_same_thread=False)
            found = self._conn.execute(_WAITING, (self.host,)).fetchone() is not None
        except sqlite3.Error:
            self.close()
            return True
        if found:
            self._last_claim = now
        return found

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
