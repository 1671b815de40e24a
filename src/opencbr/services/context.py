"""What every service function needs: settings, the catalog, the clock, the object store.

The caller owns the transaction. A service function that reads or changes the catalog takes the session
first, then what it needs of the environment, then the scope, with the rest keyword-only where it is
optional: ``list_backups(s, p, f, *, limit=...)``, ``create_checkpoint(s, ctx, p, vault_id, ...)``.
Routes, the scheduler and the CLI-facing admin paths open ``with ctx.tx() as s:`` (or
``with ctx.read() as s:`` for a request that only reads: it never waits for the workers' writes) and call
one such function, so what it changes commits or rolls back as one.

Entry points take ``ctx`` and open their own short transactions: task handlers (``run_backup(ctx, run)``
and the others in ``services.handlers``), the scheduler's rounds (``executions.run_due_executions``,
``retention.retention_sweep``: one transaction per decision, so one failure spoils nothing else), and
the few requests that read the object store (browsing, exporting, rebuilding a vault's catalog): no
transaction is held while the store is read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from opencbr.catalog.db import make_engine, make_read_session_factory, make_session_factory, transaction, upgrade
from opencbr.catalog.models import utcnow
from opencbr.config import Settings
from opencbr.providers import registry
from opencbr.storage import open_store


@dataclass
class ServiceContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    #: Naive-UTC "now"; tests inject a fake clock.
    clock: Callable[[], datetime] = utcnow
    _master_key: bytes | None = field(default=None, repr=False)
    _store: object | None = field(default=None, repr=False)
    #: Sessions that only read (None: ``read()`` uses ``sessions``).
    read_sessions: sessionmaker[Session] | None = field(default=None, repr=False)
    #: Small per-process caches (authentication: ``services.iam``), dropped with the context.
    caches: dict = field(default_factory=dict, repr=False)
    _providers: registry.Registry | None = field(default=None, repr=False)

    def tx(self):
        """A unit of work on the catalog (commit on success, roll back on error)."""
        return transaction(self.sessions)

    def read(self):
        """A unit of work that only reads: it never takes the catalog's write lock (SQLite), so lists
        and shows neither wait for the workers' writes nor hold them up. Writing in it is a bug."""
        return transaction(self.read_sessions or self.sessions)

    def now(self) -> datetime:
        return self.clock()

    @property
    def master_key(self) -> bytes:
        if self._master_key is None:
            self._master_key = self.settings.master_key()
        return self._master_key

    @property
    def store(self):
        """The object store of this region (local directory or S3), opened once per process."""
        if self._store is None:
            self._store = open_store(self.settings.effective_object_store)
        return self._store

    @property
    def providers(self) -> registry.Registry:
        """Who holds the resources (docs/design.md: resources come from providers), per this context's
        settings."""
        if self._providers is None:
            self._providers = registry.installed(resource_roots=tuple(self.settings.resource_roots))
        return self._providers

    def close(self) -> None:
        self.engine.dispose()


def open_context(settings: Settings, *, migrate: bool = True,
                 clock: Callable[[], datetime] | None = None) -> ServiceContext:
    """Connect to the catalog of ``settings`` and (by default) bring its schema up to date."""
    url = settings.effective_catalog_url
    if migrate:
        upgrade(url)
    engine = make_engine(url)
    ctx = ServiceContext(settings=settings, engine=engine, sessions=make_session_factory(engine),
                         read_sessions=make_read_session_factory(engine))
    if clock is not None:
        ctx.clock = clock
    return ctx
