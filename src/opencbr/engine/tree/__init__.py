"""File-system (tree) backups over the shared chunk store (issue 5; guide 2.4.3, 6.5, 13.2.15).

Public API (every function takes a :class:`~opencbr.engine.Repository` or its ``.chunks``)::

    from opencbr.engine.tree import (backup_tree, restore_tree, list_tree, list_backup, stat_path,
                                     verify_tree, TreeBackupResult, TreeRestoreResult, ListEntry,
                                     TreeWarning, TreeVerifyReport, ChunkParams)

    backup_tree(repo, root, *, backup_id, meta, parent_backup_id=None, full=False, progress=None,
                cancel=None) -> TreeBackupResult
    restore_tree(repo, backup_id, target_dir, *, subpath=None, progress=None, cancel=None,
                 allow_nonempty=False, owners=None, sync=True) -> TreeRestoreResult
    list_tree(repo, backup_id, path="/") -> list[ListEntry]        # tree backups
    list_backup(repo, backup_id, path="/") -> list[ListEntry]      # tree or disk backups
    stat_path(repo, backup_id, path) -> Entry
    verify_tree(repo, backup_id, progress=None) -> TreeVerifyReport

Errors are the domain's: NotFound (backup or path), InvalidParameter (bad path, not a tree backup,
non-empty restore target), StateConflict (backup id exists), DataCorruption (damaged data), and the
engine's BackupCancelled / RestoreCancelled. Delete, GC, usage: the Repository's own methods (a tree
backup is a manifest whose refs list every chunk it uses; see dynamic_index.py).

Modules: ``entry`` (record format), ``catalog`` (CatalogWriter/Reader), ``dynamic_index`` (the
manifest), ``walker`` (TreeWalker), ``chunker`` (FileChunker, FastCDC), ``backup``, ``restore``,
``browse``, ``verify``, ``cli`` (``python -m opencbr.engine.tree``).
"""

from .backup import backup_tree
from .browse import list_backup, list_tree, stat_path
from .chunker import DEFAULT_PARAMS, ChunkParams
from .entry import Entry
from .restore import restore_tree
from .results import ListEntry, TreeBackupResult, TreeRestoreResult, TreeWarning
from .verify import TreeVerifyReport, verify_tree

__all__ = ["ChunkParams", "DEFAULT_PARAMS", "Entry", "ListEntry", "TreeBackupResult", "TreeRestoreResult",
           "TreeVerifyReport", "TreeWarning", "backup_tree", "list_backup", "list_tree", "restore_tree", "stat_path",
           "verify_tree"]
