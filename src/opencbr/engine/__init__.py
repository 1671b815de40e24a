"""The data plane (DESIGN.md section 4): chunk store, fixed index for disks, backup/restore/verify/GC.

Public API (see each module's docstring)::

    from opencbr.engine import (Repository, LockTiming, DiskSource, FileDiskSource, DiskBackupResult,
                                RestoreResult, VerifyReport, GCResult, BackupCancelled, RestoreCancelled,
                                ChunkStore, WriteSession, Manifest, FixedIndex)
"""

from .chunkstore import ChunkStore, PutResult
from .disk_backup import DiskBackupResult
from .disk_restore import DamagedChunk, RestoreResult, VerifyReport
from .disk_source import DiskSource, FileDiskSource
from .errors import BackupCancelled, OperationCancelled, RestoreCancelled
from .fixed_index import DEFAULT_BLOCK_SIZE, FixedIndex
from .gc import GCResult
from .locks import LockTiming
from .manifests import Manifest
from .repository import Repository
from .session import WriteSession

__all__ = [
    "BackupCancelled", "ChunkStore", "DEFAULT_BLOCK_SIZE", "DamagedChunk", "DiskBackupResult", "DiskSource",
    "FileDiskSource", "FixedIndex", "GCResult", "LockTiming", "Manifest", "OperationCancelled", "PutResult",
    "Repository", "RestoreCancelled", "RestoreResult", "VerifyReport", "WriteSession",
]
