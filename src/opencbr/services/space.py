"""Running out of storage: what ran out, in words, and a reserve that keeps deletes possible.

A full object store or catalog is a ``StorageFull`` error (HTTP 503) naming which one and where, never
an internal error. On local storage (a ``file://`` object store, a SQLite catalog) a backup does not
start while free space is below ``storage_reserve_mb`` and a running one stops below half of it: the
rest stays free for the catalog, so deleting backups (the way out) still works.
"""

from __future__ import annotations

import errno
import os

import sqlalchemy.exc

from opencbr.catalog.db import is_sqlite
from opencbr.domain.errors import StorageFull
from opencbr.services.context import ServiceContext

MiB = 1024 * 1024
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_PG_DISK_FULL = "53100"


def local_storage(ctx: ServiceContext) -> list[tuple[str, str]]:
    """(what, directory) of the object store and the catalog where they are local file systems."""
    places = []
    store = ctx.settings.effective_object_store
    if store.startswith("file://"):
        places.append(("the object store", store[len("file://"):]))
    catalog = ctx.settings.effective_catalog_url
    if is_sqlite(catalog) and "///" in catalog:
        places.append(("the catalog", os.path.dirname(os.path.abspath(catalog.split("///", 1)[1]))))
    return places


def free_bytes(path: str) -> int | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def check_reserve(ctx: ServiceContext, *, fraction: float = 1.0) -> None:
    """StorageFull when the object store's or the catalog's file system has less free space than
    ``fraction`` of the reserve (1 before a backup starts, 1/2 while one runs)."""
    reserve = ctx.settings.storage_reserve_mb * MiB * fraction
    for what, path in local_storage(ctx):
        free = free_bytes(path)
        if free is not None and free < reserve:
            raise StorageFull(f"{what} at {path} is (nearly) full: {free // MiB} MiB free, below the "
                              f"{reserve / MiB:.0f} MiB kept free so that backups can still be deleted; "
                              "delete backups or add space")


def storage_full(ctx: ServiceContext, exc: BaseException) -> StorageFull | None:
    """The StorageFull error ``exc`` (or an error it was raised from) amounts to, naming what ran out;
    None if it is not about space."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, StorageFull):
            return e
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return StorageFull(f"{_which_is_full(ctx, e.filename)} is full ({e.strerror}); delete backups or "
                               "add space")
        if isinstance(e, sqlalchemy.exc.OperationalError) and _catalog_full(e.orig):
            return StorageFull(f"the catalog's storage is full ({str(e.orig).strip()}); add space to the "
                               "catalog's file system or database")
        e = e.__cause__ or e.__context__
    return None


def _catalog_full(orig: BaseException | None) -> bool:
    if getattr(orig, "sqlstate", None) == _PG_DISK_FULL or getattr(orig, "pgcode", None) == _PG_DISK_FULL:
        return True
    return "database or disk is full" in str(orig)


def _which_is_full(ctx: ServiceContext, filename: object) -> str:
    """Which local storage ran out: the one holding ``filename`` if known, else the one with the least
    free space (a write to the object store does not always name its file)."""
    places = local_storage(ctx)
    if isinstance(filename, str):
        for what, path in places:
            if os.path.abspath(filename).startswith(os.path.abspath(path) + os.sep):
                return f"{what} at {path}"
        return f"the file system holding {filename}"
    nearly_full = [(what, path) for what, path in places if (free_bytes(path) or 0) < 64 * MiB]
    if not nearly_full:  # a restore target, a scratch file: not ours to name
        return "the file system the task wrote to"
    what, path = nearly_full[0]  # the object store first: most of what a task writes goes there
    return f"{what} at {path}"

