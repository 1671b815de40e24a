"""File-system (tree) backups over the shared chunk store (issue 5; guide 2.4.3, 6.5, 13.2.15).

Public API (every function takes a :class:`~opencbr.engine.Repository` or its ``.chunks``)::

    from opencbr.engine.tree import (backup_tree, restore_tree, list_tree, list_backup, stat_path,
                                     verify_tree, TreeBackupResult, TreeRestoreResult, ListEntry,
                                     TreeWarning, ChunkParams)

    backup_tree(repo, root, *, backup_id, meta, parent_backup_id=None, full=False, progress=None,
                cancel=None) -> TreeBackupResult
    backup_tree_from(repo, StoredTreeSource(other_repo.chunks, backup_id), *, backup_id, meta, ...)
                -> TreeBackupResult  # a stored tree backup backed up again: a replica (stored.py)
    restore_tree(repo, backup_id, target_dir, *, subpath=None, progress=None, cancel=None,
                 allow_nonempty=False, owners=None, sync=True) -> TreeRestoreResult
    list_tree(repo, backup_id, path="/") -> list[ListEntry]        # tree backups
    list_backup(repo, backup_id, path="/") -> list[ListEntry]      # tree or disk backups
    stat_path(repo, backup_id, path) -> Entry
    verify_tree(repo, backup_id, progress=None) -> VerifyReport (engine/chunks/reader.py)

Errors are the engine's (engine/errors.py): Missing (backup or path), InvalidArgument (bad path, not a
tree backup, non-empty restore target), Conflict (backup id exists), Damaged (damaged data),
BackupCancelled / RestoreCancelled. Delete, GC, usage: the Repository's own methods (a tree
backup is a manifest whose refs list every chunk it uses; see dynamic_index.py).

Modules: ``entry`` (record format), ``catalog`` (CatalogWriter/Reader), ``dynamic_index`` (the
manifest), ``walker`` (TreeWalker), ``chunker`` (FileChunker, FastCDC), ``backup``,
``restore`` (a package: paths, metadata, fetch, parts, restorer), ``browse``, ``verify``.
On its own: ``python -m opencbr.engine tree ...`` (engine/cli.py).
"""

from ..lazy import lazy_getattr

# Loaded on first use (PEP 562), as in ``opencbr.engine``: a backup does not import the restorer.
_WHERE = {
    "backup_tree": "backup", "backup_tree_from": "backup", "StoredTreeSource": "stored", "list_backup": "browse", "list_tree": "browse", "stat_path": "browse",
    "ChunkParams": "chunker", "DEFAULT_PARAMS": "chunker", "Entry": "entry", "restore_tree": "restore",
    "ListEntry": "results", "TreeBackupResult": "results", "TreeRestoreResult": "results",
    "TreeWarning": "results", "verify_tree": "verify",
}

__all__ = sorted(_WHERE)
__getattr__ = lazy_getattr(__name__, _WHERE, globals())
