"""File-system (tree) backups over the shared chunk store."""

from .backup import backup_tree
from .chunker import DEFAULT_PARAMS, ChunkParams
from .results import ListEntry, TreeBackupResult, TreeRestoreResult, TreeWarning

__all__ = ["ChunkParams", "DEFAULT_PARAMS", "ListEntry", "TreeBackupResult", "TreeRestoreResult", "TreeWarning",
           "backup_tree"]
