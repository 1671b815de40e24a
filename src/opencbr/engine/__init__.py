"""The data plane (docs/design.md), by job: ``chunks/`` the core chunk store (knows nothing of disks or
trees), ``disk/`` disk images with fixed indexes, ``tree/`` file-system trees with dynamic indexes and
catalogs, ``diskfs/`` the file browser inside disk images, and ``repository.py`` the one entry point
the services call for both kinds.

Public API (see each module's docstring)::

    from opencbr.engine import (Repository, LockTiming, DiskSource, FileDiskSource, DiskBackupResult,
                                RestoreResult, VerifyReport, GCResult, BackupCancelled, RestoreCancelled,
                                Damaged, Missing, InvalidArgument, Conflict, ChunkStore, WriteSession,
                                Manifest, FixedIndex)
"""

import importlib

from .lazy import lazy_getattr

# Loaded on first use (PEP 562): a process that runs one kind of operation (e.g. the tree engine's
# CLI backing up a directory) does not pay for importing the others at start-up.
_WHERE = {
    "ChunkStore": "chunks.store", "PutResult": "chunks.session", "DiskBackupResult": "disk.backup",
    "DamagedChunk": "disk.restore", "RestoreResult": "disk.restore", "VerifyReport": "chunks.reader",
    "DiskSource": "disk.source", "FileDiskSource": "disk.source", "BackupCancelled": "errors",
    "OperationCancelled": "errors", "RestoreCancelled": "errors", "Damaged": "errors", "Missing": "errors",
    "InvalidArgument": "errors", "Conflict": "errors", "DEFAULT_BLOCK_SIZE": "disk.fixed_index",
    "FixedIndex": "disk.fixed_index", "GCResult": "chunks.gc", "LockTiming": "chunks.locks",
    "Manifest": "chunks.manifests", "Repository": "repository", "WriteSession": "chunks.session",
}

__all__ = sorted(_WHERE)
__getattr__ = lazy_getattr(__name__, _WHERE, globals())

#: Modules repository.py imports inside the operations that use them, beyond the names above.
_LOADED_BY_OPERATIONS = ("disk.export", "diskfs", "tree")


def operation_modules() -> set[str]:
    """Every module of this package that loads on first use: the names above, ``tree``'s, and what
    repository.py imports when an operation first runs."""
    from . import tree

    return {*_WHERE.values(), *_LOADED_BY_OPERATIONS, *(f"tree.{m}" for m in tree._WHERE.values())}


def load_operations() -> None:
    """Import every operation's modules now. They load on first use, which suits a process that runs
    one operation (the engine's CLI); a worker runs them all for as long as it lives, and would
    otherwise import each kind's modules inside its first task of that kind (29 modules, 22 ms from a
    cold page cache, 14 ms warm)."""
    for name in sorted(operation_modules()):
        importlib.import_module(f".{name}", __name__)
