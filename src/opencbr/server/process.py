"""What every OpenCBR process does the same way: set up logging, stop in order on SIGINT/SIGTERM, turn a
catalog that cannot be opened into a message an operator can act on, and refuse to run on an object store
that overwrites on create-only writes or with a master key that is not the installation's."""

from __future__ import annotations

import gc
import hashlib
import hmac
import json
import logging
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import SQLAlchemyError

from opencbr.config import Settings
from opencbr.domain.errors import CBRError
from opencbr.services import repositories
from opencbr.services.context import ServiceContext
from opencbr.system import processes


class CatalogTrouble(CBRError):
    code = "OpenCBR.Catalog"


class ForeignMasterKey(CBRError):
    code = "OpenCBR.MasterKey"


class UnsafeObjectStore(CBRError):
    code = "OpenCBR.ObjectStore"


#: In the object store: a check value of the installation's master key, written by the first process.
MASTER_KEY_CHECK = "installation/master-key-check"
#: In the object store: where each start writes (and removes) its create-only probe.
WRITE_PROBES = "installation/write-probes/"


def start_logging() -> None:
    """The one logging set-up of the service processes: INFO and up on stderr (alembic's chatter hidden)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def keep_for_life() -> None:
    """Everything loaded so far (modules, the app, SQLAlchemy's mappers) lives as long as the process:
    out of the cyclic collector's sight, a full collection walks only what requests and tasks allocate.
    The API's CPU per list request went down with it (bench/api.py); in a worker, a full collection
    during a task walked the ~110k objects of its imports, 36-40 ms each (measured on a changed
    re-backup of bench/realtree.py's tree)."""
    gc.collect()
    gc.freeze()


@contextmanager
def opening_catalog(settings: Settings) -> Iterator[None]:
    """Inside: a database error while starting is :class:`CatalogTrouble` saying what to do, not a
    driver's traceback."""
    try:
        yield
    except SQLAlchemyError as e:
        raise CatalogTrouble(_catalog_trouble(settings, e)) from None


def _catalog_trouble(settings: Settings, e: Exception) -> str:
    reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0][:300]
    where = settings.effective_catalog_url
    if where.startswith("sqlite"):
        return (f"the catalog {where.split('///', 1)[-1]} cannot be read ({reason}); it may be damaged. "
                f"The backups themselves are safe in the object store: move the damaged file aside, start "
                f"again (a new, empty catalog is made), then recreate each vault's catalog from the store "
                f"with `cbr admin vault stored` and `cbr admin vault rebuild <vault-id>`")
    return (f"the catalog database cannot be used ({reason}). Check `catalog_url` (OPENCBR_CATALOG_URL) and "
            f"that the database is up; if its contents were lost, start on an empty database and recreate each "
            f"vault's catalog from the store with `cbr admin vault rebuild <vault-id>`")


def note_stop_signals() -> list[str]:
    """SIGINT and SIGTERM only note that a stop was asked (the list gets the signal's name), so that the
    process stops in order. uvicorn re-raises the signal it caught when it exits: with these handlers in
    place that re-raise lands here instead of killing the process before its workers are stopped."""
    stopping: list[str] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stopping.append(signal.Signals(signum).name))
    return stopping


def wait_for_stop(stopping: list[str]) -> str:
    """Wait until :func:`note_stop_signals` noted a signal; its name. (No ``Event.wait`` here: setting an
    Event from a signal handler can deadlock.)"""
    while not stopping:
        time.sleep(0.2)
    return stopping[0]


def stop_with_parent() -> None:
    """A worker process of ``opencbr serve`` stops in order (SIGTERM) when the API process dies."""
    if not processes.stop_with_parent(os.getppid(), signal.SIGTERM):
        os.kill(os.getpid(), signal.SIGTERM)


def check_installation(ctx: ServiceContext) -> None:
    """What a service process checks before it serves: the object store refuses to overwrite, and the
    master key is the installation's."""
    check_create_only_writes(ctx.store)
    check_master_key(ctx)


def check_create_only_writes(store) -> None:
    """Two workers creating one vault's repository, the exclusive GC lock and publishing a backup's
    manifest rely on a create-only write (S3: ``PUT`` with ``If-None-Match: *``) failing when the object
    exists. An S3 implementation that ignores the header would let a second writer silently replace the
    first one's object (a repository's keys, a lock): the process stops instead."""
    probe = WRITE_PROBES + os.urandom(8).hex()
    try:
        created = store.put_if_absent(probe, b"1")
        replaced = store.put_if_absent(probe, b"2")
    finally:
        store.delete(probe)
    if created and not replaced:
        return
    raise UnsafeObjectStore(
        "the object store does not refuse to overwrite an existing object on a create-only write (S3: PUT "
        "with If-None-Match: *); OpenCBR needs it to keep two workers from replacing each other's repository "
        "keys and locks. Use an S3 implementation that honours conditional writes (docs/operations.md)")


def check_master_key(ctx: ServiceContext) -> None:
    """Every process of an installation must hold the one master key. A process on another machine that
    was not given it would otherwise make a new ``<data_dir>/master.key`` of its own and create vault
    repositories nobody else can open (their backups Available, yet unrestorable elsewhere). The first
    process to start writes an HMAC of a constant under the key (it reveals nothing of the key) into the
    object store; every later start compares and stops, saying why, before it touches anything. Until a
    check value exists (an installation made before this check), the key must first open the vaults, so
    that the first process to start after an upgrade cannot make its wrong key the reference."""
    path = os.path.join(ctx.settings.data_dir, "master.key")
    made_now = not ctx.settings.master_key_hex and not os.path.exists(path)
    mine = hmac.new(ctx.master_key, b"opencbr/master-key-check/v1", hashlib.sha256).hexdigest()
    if ctx.store.stat(MASTER_KEY_CHECK) is not None or repositories.master_key_opens_vaults(ctx):
        ctx.store.put_if_absent(MASTER_KEY_CHECK, json.dumps({"hmac_sha256": mine}).encode())
        if hmac.compare_digest(json.loads(ctx.store.get(MASTER_KEY_CHECK))["hmac_sha256"], mine):
            return
    source = "OPENCBR_MASTER_KEY" if ctx.settings.master_key_hex else path
    extra = f" ({path} was created just now by this process: remove it)" if made_now else ""
    raise ForeignMasterKey(
        f"the master key of this process ({source}) is not the installation's: the object store "
        f"{ctx.settings.effective_object_store.split('?', 1)[0]} was set up with another one{extra}. Give every "
        f"process of the installation (serve, worker, scheduler, on every machine) the same key: copy "
        f"master.key from the machine that first ran `opencbr serve`, or set OPENCBR_MASTER_KEY to the same "
        f"64 hex digits (docs/operations.md)")

