"""What a tree backup reads: the tree behind :class:`~opencbr.engine.tree.backup.TreeBackup`.

A source gives the backup its entries in catalog order (``walk``: items with a relative ``path`` and a
``st`` that has the ``os.stat_result`` fields the backup compares with its parent's records), each
entry's metadata (``entry``: an :class:`Entry` without content), a symlink's target (``readlink``) and a
regular file's content cut by the backup's own chunker (``read_file``). Two kinds:

- :class:`DirectorySource`: a directory of this machine (a file system being backed up);
- :class:`~opencbr.engine.tree.stored.StoredTreeSource`: a tree backup already in a repository (a
  replica: the same files, cut and sealed again under another vault's keys).
"""

from __future__ import annotations

import os
from typing import Callable, Iterator, Protocol

from .chunker import DIRECT_MIN, FileChunker, FileData
from .common import Names
from .entry import BLK, CHR, DIR, FILE, SYMLINK, Entry
from .walker import ListingTally, TreeScanner, TreeWalker
from .xattrs import read_xattrs

Warn = Callable[[bytes, str, bool], None]


class TreeSource(Protocol):
    def walk(self, warn: Warn, incremental: bool) -> Iterator: ...
    def scanner(self): ...
    def entry(self, item, typ: int, warn: Warn) -> Entry: ...
    def readlink(self, item) -> bytes: ...
    def read_file(self, chunker: FileChunker, item, small_limit: int) -> FileData: ...
    def close(self) -> None: ...


class DirectorySource:
    """A directory tree of this machine (``root``: a path, or ``/proc/self/fd/N`` of one opened)."""

    size_hint = 0  # (the backup sizes a first backup with a TreeScanner instead)
    tally: ListingTally | None = None  # the walk adds up what it lists here (see ListingTally)

    def __init__(self, root: bytes, *, one_file_system: bool = True, exclude: frozenset[bytes] = frozenset(),
                 listing_total: bool = False):
        """``listing_total``: a first backup's progress total comes from what its walk lists
        (:class:`ListingTally`), not from a :class:`TreeScanner` listing and ``lstat``'ing the whole
        tree a second time beside it."""
        self.root = root
        self.one_file_system = one_file_system
        self.exclude = exclude
        self.listing_total = listing_total
        self.names = Names()

    def walk(self, warn: Warn, incremental: bool) -> Iterator:
        # A first (or full) backup reads every file: its listing threads start the kernel reading the
        # files read through the page cache (below DIRECT_MIN) ahead of the workers (30k-file tree:
        # 4.9-5.1 -> 4.3-4.7 s). An incremental backup reads few files, which are not known ahead;
        # its walk is mostly metadata reads: a helper process reads them ahead (``warm``, see
        # MetadataWarmer: 30k-file tree, unchanged 0.85 -> 0.65 s, changed 1.1 -> 0.76 s), and it
        # lists ahead in threads only where listings wait on the device (``adaptive``).
        return iter(TreeWalker(self.root, warn, one_file_system=self.one_file_system,
                               prefetch=4 if incremental else 2, readahead_below=0 if incremental else DIRECT_MIN,
                               adaptive=incremental, warm=incremental, exclude=self.exclude,
                               # a first backup's listing threads read nodes' xattrs and symlinks'
                               # targets (item.meta): no system call per entry on the walking thread
                               node_meta=not incremental, tally=None if incremental else self.tally))

    def scanner(self) -> TreeScanner | ListingTally:
        if self.listing_total:
            self.tally = ListingTally()
            return self.tally
        return TreeScanner(self.root, one_file_system=self.one_file_system, threads=2).start()

    def entry(self, item, typ: int, warn: Warn) -> Entry:
        st = item.st
        e = Entry(item.path, typ, st.st_mode, st.st_uid, st.st_gid, 0, st.st_mtime_ns, st.st_ctime_ns,
                  st.st_atime_ns, st.st_ino, st.st_nlink, 0, self.names.user(st.st_uid), self.names.group(st.st_gid))
        if typ == FILE:
            e.size = st.st_size
            # rdev is meaningless for a regular file: it carries st_dev, so that hard-link groups are
            # told apart by (dev, ino) when a backup spans several file systems (one_file_system=False).
            e.rdev = st.st_dev
        elif typ in (DIR, SYMLINK):
            # Not recorded: listing a directory or reading a symlink (this very backup does both)
            # changes its atime, so those records -- and the catalog chunks holding them -- would differ
            # in every backup (measured at 300k files: 843 of 977 catalog chunks re-stored by an
            # unchanged re-backup). Restore uses the mtime. borg stores no atimes by default at all.
            e.atime_ns = 0
        elif typ in (CHR, BLK):
            e.rdev = st.st_rdev
        if typ != FILE:  # (a regular file's come with its content: FileData.xattrs)
            meta = item.meta
            e.xattrs, problems = (meta.xattrs, meta.xattr_problems) if meta else read_xattrs(item.abspath)
            for msg in problems:
                warn(item.path, msg, False)
        return e

    def readlink(self, item) -> bytes:
        if item.meta is None:
            return os.readlink(item.abspath)
        if item.meta.link_error is not None:
            raise item.meta.link_error
        return item.meta.link

    def read_file(self, chunker: FileChunker, item, small_limit: int) -> FileData:
        return chunker.read_file(item.abspath, item.st, small_limit)

    def close(self) -> None:
        pass
