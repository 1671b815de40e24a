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
