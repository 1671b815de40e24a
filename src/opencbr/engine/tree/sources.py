"""What a tree backup reads: the tree behind :class:`~opencbr.engine.tree.backup.TreeBackup`.

A source gives the backup its entries in catalog order (``walk``: items with a relative ``path`` and a
``st`` that has the ``os.stat_result`` fields the backup compares with its parent's records), each
entry's metadata (``entry``: an :class:`Entry` without content), a symlink's target (``readlink``) and a
regular file's content cut by the backup's own chunker (``read_file``; small files, which the backup
bundles, in batches: ``read_small``). Two kinds:

- :class:`DirectorySource`: a directory of this machine (a file system being backed up);
- :class:`~opencbr.engine.tree.stored.StoredTreeSource`: a tree backup already in a repository (a
  replica: the same files, cut and sealed again under another vault's keys).
"""

from __future__ import annotations

import errno
import os
import zlib
from contextlib import contextmanager
from typing import Callable, Iterator, Protocol

from ...system.beneath import PathSwapped, open_at
from .chunker import (
    CHANGED,
    DIRECT_MIN,
    REPLACED,
    SIZE_CHANGED,
    VANISHED,
    FileChunker,
    FileData,
    FileUnreadable,
    cannot_open,
    read_error,
)
from .common import Names, built_extension
from .entry import BLK, CHR, DIR, FILE, SYMLINK, Entry
from .walker import ListingTally, TreeScanner, TreeWalker
from .xattrs import listing_failed, read_xattrs, sorted_xattrs

Warn = Callable[[bytes, str, bool], None]


class TreeSource(Protocol):
    # (incremental: the backup has a parent; a DirectorySource then yields WalkRuns too, see walker.WalkRun)
    def walk(self, warn: Warn, incremental: bool) -> Iterator: ...
    def scanner(self): ...
    def entry(self, item, typ: int, warn: Warn) -> Entry: ...
    def readlink(self, item) -> bytes: ...
    def read_file(self, chunker: FileChunker, item, small_limit: int) -> FileData: ...
    def read_small(self, chunker: FileChunker, items: list, small_limit: int) -> list: ...
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
        # Files are opened below this descriptor of the root, by their path in the walk, and nothing on
        # the way is followed (chunker.open_noatime): never by their absolute path, which a directory
        # swapped for a symlink after the listing would lead elsewhere -- to a device node, say.
        self.root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)

    def walk(self, warn: Warn, incremental: bool) -> Iterator:
        # A first (or full) backup reads every file: its listing threads start the kernel reading the
        # files read through the page cache (below DIRECT_MIN) ahead of the workers (30k-file tree:
        # 4.9-5.1 -> 4.3-4.7 s). An incremental backup reads few files, which are not known ahead;
        # its walk is mostly metadata reads: threads list the tree ahead of it and it takes their
        # listings (``warm``, see TreeWalker; before, a helper process only warmed the caches,
        # MetadataWarmer: 30k-file tree, unchanged 0.85 -> 0.65 s, changed 1.1 -> 0.76 s), and it
        # lists ahead in threads only where listings wait on the device (``adaptive``).
        return iter(TreeWalker(self.root, warn, one_file_system=self.one_file_system,
                               prefetch=4 if incremental else 2, readahead_below=0 if incremental else DIRECT_MIN,
                               adaptive=incremental, warm=incremental, exclude=self.exclude,
                               # a first backup's listing threads read nodes' xattrs and symlinks'
                               # targets (item.meta): no system call per entry on the walking thread
                               node_meta=not incremental, tally=None if incremental else self.tally,
                               # an incremental walk's non-directories come in runs compared in C (WalkRun)
                               runs=incremental))

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
            if meta is not None:
                e.xattrs, problems = meta.xattrs, meta.xattr_problems
            elif typ == DIR and item.path and _native_reading is not None:
                e.xattrs, problems = self._dir_xattrs(item)
            else:
                e.xattrs, problems = self._xattrs_of(item)
            for msg in problems:
                warn(item.path, msg, False)
        return e

    def readlink(self, item) -> bytes:
        if item.meta is None:
            with self._at(item) as path:
                return os.readlink(path)
        if item.meta.link_error is not None:
            raise item.meta.link_error
        return item.meta.link

    @contextmanager
    def _at(self, item) -> Iterator[bytes]:
        """A path of the entry while the block runs: its name in its directory, reopened below the root
        with no symlink followed (``/proc/self/fd/N/NAME``), never its absolute path, which a directory
        swapped since the walk listed it would lead out of the tree. OSError if that directory cannot be
        reached so."""
        parent, _, name = item.path.rpartition(b"/")
        try:
            dfd = open_at(self.root_fd, os.fsdecode(parent), os.O_PATH | os.O_DIRECTORY) if parent \
                else os.dup(self.root_fd)
        except PathSwapped as e:
            raise OSError(errno.ESTALE, f"its directory was replaced during the backup ({e})") from None
        try:
            yield b"/proc/self/fd/%d/%s" % (dfd, name)
        finally:
            os.close(dfd)

    def _dir_xattrs(self, item) -> tuple[list, list[str]]:
        """A directory's xattrs in one call to the C reader (``dir_xattrs``): through a descriptor of the
        directory itself, opened below the root with no symlink followed, checked to be the one listed."""
        st = item.st
        status, err, got = _native_reading.dir_xattrs(self.root_fd, item.path, st.st_dev, st.st_ino)
        if status == _REPLACED:
            return [], [f"cannot list xattrs: {_DIR_REPLACED}"]
        if status:
            return [], [f"cannot list xattrs: {os.strerror(err)}"]
        return ([], []) if got is None else _xattrs(got)

    def _xattrs_of(self, item):
        try:
            with self._at(item) as path:
                return read_xattrs(path)
        except OSError as e:
            return [], [f"cannot list xattrs: {e.strerror or e}"]

    def read_file(self, chunker: FileChunker, item, small_limit: int) -> FileData:
        return chunker.read_file((self.root_fd, item.path), item.st, small_limit)

    def read_small(self, chunker: FileChunker, items: list, small_limit: int) -> list:
        """A batch of small files (below ``small_limit`` when walked; see :func:`read_each`), read by the C
        reader where it is built: the same results, warnings and errors as :meth:`read_file` gives."""
        if _native_reading is None:
            return read_each(self, chunker, items, small_limit)
        out: list = []
        total = 0
        for item, got in zip(items, _native_reading.read_small(items, small_limit, self.root_fd), strict=True):
            if got is None or (len(got) == 2 and got[0] == _REPLACED):
                # no longer small: read on its own, as a big file; replaced: read_file says by what, and
                # reads a regular file renamed over it (FileData.stat)
                out.extend(read_each(self, chunker, [item], small_limit))
            elif len(got) == 2:
                out.append(_unreadable(*got))
            else:
                data, crc, warning, xa = got
                xattrs, problems = ([], []) if xa is None else _xattrs(xa)
                if data is None:  # (an empty file)
                    out.append(FileData(warning=_WARNINGS[warning], xattrs=xattrs, xattr_problems=problems))
                    continue
                n = len(data)
                total += n
                out.append(FileData(data=data, crc=crc, bytes_read=n, size=n, warning=_WARNINGS[warning],
                                    xattrs=xattrs, xattr_problems=problems))
        chunker.on_bytes(total)
        return out

    def close(self) -> None:
        if self.root_fd >= 0:
            os.close(self.root_fd)
            self.root_fd = -1


def read_each(source: TreeSource, chunker: FileChunker, items: list, small_limit: int) -> list:
    """A batch of small files read one by one (``source.read_file``): per file its FileData (the content
    in ``data``, with its CRC-32 for the bundle's cut test) or the FileUnreadable it raised."""
    out: list = []
    for item in items:
        try:
            got = source.read_file(chunker, item, small_limit)
        except FileUnreadable as e:
            out.append(e)
            continue
        if got.data is not None:
            got.crc = zlib.crc32(got.data)
        out.append(got)
    return out


# The C reader's codes (_reading.c), in read_file's words.
_WARNINGS = (None, SIZE_CHANGED, CHANGED)
_VANISHED, _OPEN_FAILED, _REPLACED, _READ_FAILED = 1, 2, 3, 4


_DIR_REPLACED = ("replaced during the backup (another directory, a symbolic link or a file is there now, or in place "
                 "of a directory above it)")


def _unreadable(status: int, err: int) -> FileUnreadable:
    if status == _VANISHED:
        return FileUnreadable(VANISHED, vanished=True)
    if status == _REPLACED:
        return FileUnreadable(REPLACED, vanished=True)
    return FileUnreadable((cannot_open if status == _OPEN_FAILED else read_error)(os.strerror(err)))


def _xattrs(got) -> tuple[list, list[str]]:
    if got.__class__ is int:  # (listing the names failed)
        return listing_failed(got)
    return sorted_xattrs([(os.fsdecode(n), v) for n, v in got])


_READING_ABI = 4  # the interface of _reading.c this file calls (a stale build of another one is not used)


def _load_native_reading():
    """The C reader if it is built, is the version this file expects and reads this file as Python
    does (content and CRC-32); else None (``OPENCBR_READING=python``: None, to compare or rule it out)."""
    reading = built_extension("_reading", _READING_ABI, "OPENCBR_READING")
    if reading is None:
        return None
    try:
        here = _Here(os.fsencode(os.path.abspath(__file__)))
        with open(here.abspath, "rb") as f:
            mine = f.read()
        root_fd = os.open(os.path.dirname(here.abspath), os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            got = reading.read_small([here], 1 << 20, root_fd)
        finally:
            os.close(root_fd)
    except OSError:
        return None
    if not (len(got) == 1 and got[0] is not None and len(got[0]) == 4 and got[0][:2] == (mine, zlib.crc32(mine))):
        return None
    return reading


class _Here:
    def __init__(self, abspath: bytes):
        self.abspath = abspath
        self.path = os.path.basename(abspath)
        self.st = os.lstat(abspath)


_native_reading = _load_native_reading()


def native_reading():
    """The C extension that reads a batch of small files in one call (``_reading``), or None where it is
    not built (they are then read one by one in Python, with the same results)."""
    return _native_reading
