"""What every OpenCBR process does the same way: set up logging, stop in order on SIGINT/SIGTERM, and
turn a catalog that cannot be opened into a message an operator can act on."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.exc import SQLAlchemyError

from opencbr.config import Settings
from opencbr.domain.errors import CBRError
from opencbr.system import processes


class CatalogTrouble(CBRError):
    code = "OpenCBR.Catalog"


def start_logging() -> None:
    """The one logging set-up of the service processes: INFO and up on stderr (alembic's chatter hidden)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


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
