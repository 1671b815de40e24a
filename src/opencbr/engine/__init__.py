"""The data plane (docs/design.md): chunk store, fixed index for disks, backup/restore/verify/GC.

Public API (see each module's docstring)::

    from opencbr.engine import (Repository, LockTiming, DiskSource, FileDiskSource, DiskBackupResult,
                                RestoreResult, VerifyReport, GCResult, BackupCancelled, RestoreCancelled,
                                ChunkStore, WriteSession, Manifest, FixedIndex)
"""

from .lazy import lazy_getattr

# Loaded on first use (PEP 562): a process that runs one kind of operation (e.g. the tree engine's
# CLI backing up a directory) does not pay for importing the others at start-up.
_WHERE = {
    "ChunkStore": "chunkstore", "PutResult": "chunkstore", "DiskBackupResult": "disk_backup",
    "DamagedChunk": "disk_restore", "RestoreResult": "disk_restore", "VerifyReport": "disk_restore",
    "DiskSource": "disk_source", "FileDiskSource": "disk_source", "BackupCancelled": "errors",
    "OperationCancelled": "errors", "RestoreCancelled": "errors", "DEFAULT_BLOCK_SIZE": "fixed_index",
    "FixedIndex": "fixed_index", "GCResult": "gc", "LockTiming": "locks", "Manifest": "manifests",
    "Repository": "repository", "WriteSession": "session",
}

__all__ = sorted(_WHERE)
__getattr__ = lazy_getattr(__name__, _WHERE, globals())
