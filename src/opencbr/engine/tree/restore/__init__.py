"""Tree restore: recreate a backup's tree (or one file/directory of it) under a target directory.

Safety (``paths``): every path comes from the catalog, and a catalog is data, not instructions. Paths
are checked component by component (no ``..``, ``.``, empty or absolute components; keys strictly
increasing; every entry's parent restored as a directory before it), and everything is created
relative to open directory descriptors with ``O_NOFOLLOW`` (``openat``/``mkdirat``/``symlinkat``/
``linkat``), so no symlink -- restored or pre-existing -- is ever followed, and nothing can land outside
the target. What is reopened by its path later -- a directory to give its metadata at the end, the first
name of a hard-link group -- may have been swapped meanwhile by whoever can write in the target: it is
opened below the target with no symlink followed on the way (``paths.open_restored``), a hard link is
made to the very file restored (``paths.link_restored``), and a special file's mode is set on the entry
itself, never through a symlink (``chmod_entry``). Symlinks themselves are restored verbatim (an absolute
or ``..`` target is the user's data).

Pipeline (``restorer``): the calling thread streams the catalog (in order) and creates directories,
symlinks, special files, hard links and empty regular files; file contents are gathered into *windows*
(~64 MiB or 1024 files, ``fetch``); a window's chunks are looked up in the chunk index, grouped by pack
and coalesced into range reads (the backup wrote packs in walk order, so a window maps to a few
sequential spans), and fetched, verified and written (``pwrite``, O_DIRECT for whole blocks of big
files) by ``workers`` threads. At most two windows are in flight, so memory is bounded whatever the
tree size. A file's metadata (owner, mode, xattrs, times; ``metadata``) is applied as soon as its last
chunk is written; directories' metadata is applied last, deepest first (creating children changes a
directory's mtime, and a read-only directory would refuse them). Big restores run in several forked
processes (``parts``).

A chunk that fails verification is tried from its other copies (``ChunkStore.get_chunk``); if none is
intact the restore finishes what it can and raises ``DataCorruption`` naming the damaged files.
"""

from .restorer import restore_tree

__all__ = ["restore_tree"]
