"""Checking a restored copy of a backup against what the backup holds (a restore test).

A restore already checks every chunk it reads against its name; this checks what landed on disk, from the
restored copy itself, so a restore that wrote the wrong bytes, skipped a file or left a hole is caught:

- a **disk**: every block of the restored image hashed again and compared with the backup's fixed index
  (the chunk digest of each 64 KiB block, or all zeros for a zero block); the image's SHA-256 is computed
  in the same pass and reported. Then each ext or FAT file system found in the image (bare or in an
  MBR/GPT partition) is checked by its own tool, read-only: ``e2fsck -fn`` or ``fsck.vfat -n``.
- a **tree**: every catalog entry exists with its type; a regular file has its size, and every piece of
  it hashes to its chunk's name (or, for a slice of a shared bundle chunk or a piece cut by a hole,
  equals that part of the chunk read from the vault); a symlink has its target.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field

from .chunks.store import ChunkStore
from .disk.fixed_index import FixedIndex
from .diskfs.volumes import find_volumes
from .tree.catalog import CatalogReader
from .tree.common import load_index
from .tree.entry import DIR, FILE, SYMLINK, Entry

#: Problems listed in a report; the count covers all of them.
LISTED = 20
#: Seconds a file system's own check may take.
FSCK_TIMEOUT = 600
FSCK = {"ext": ["e2fsck", "-f", "-n"], "fat": ["fsck.vfat", "-n"]}


@dataclass
class CheckReport:
    """What the check of one restored backup found: ``problems`` (the first ``LISTED``), their count, and
    what was checked."""

    backup_id: str
    kind: str
    checked: int = 0  # blocks or entries
    bytes_checked: int = 0
    sha256: str = ""  # a disk image's, as restored
    filesystems: list[dict] = field(default_factory=list)
    problem_count: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def problem(self, text: str) -> None:
        self.problem_count += 1
        if len(self.problems) < LISTED:
            self.problems.append(text)

    def to_dict(self) -> dict:
        return {"backup_id": self.backup_id, "kind": self.kind, "ok": self.ok, "checked": self.checked,
                "bytes_checked": self.bytes_checked, "sha256": self.sha256, "filesystems": self.filesystems,
                "problem_count": self.problem_count, "problems": self.problems}


def check_restored(cs: ChunkStore, backup_id: str, path: str, *, scratch: str) -> CheckReport:
    """Check the restored copy at ``path`` (an image file, or a directory) of backup ``backup_id``.
    ``scratch``: a directory for copies of partitions the file-system tools need as files."""
    if cs.manifest_header(backup_id).get("type") == "tree":
        return check_restored_tree(cs, backup_id, path)
    report = check_restored_disk(cs, backup_id, path)
    check_filesystems(path, report, scratch)
    return report


# ------------------------------------------------------------------------------------ disks
def check_restored_disk(cs: ChunkStore, backup_id: str, image: str) -> CheckReport:
    index = FixedIndex.read(cs, backup_id)
    report = CheckReport(backup_id, "disk")
    whole = hashlib.sha256()
    size = os.path.getsize(image)
    if size != index.disk_size:
        report.problem(f"the restored image has {size} bytes, the backup {index.disk_size}")
    with open(image, "rb") as f:
        for i in range(index.block_count):
            want = index.block_length(i)
            block = f.read(want)
            whole.update(block)
            report.checked += 1
            report.bytes_checked += len(block)
            if len(block) != want:
                report.problem(f"block {i} (offset {i * index.block_size}) is short: {len(block)} of {want} bytes")
                break
            if index.is_zero(i):
                if block != bytes(want):
                    report.problem(f"block {i} (offset {i * index.block_size}) should be zeros")
            elif cs.codec.digest(block) != index.digest(i):
                report.problem(f"block {i} (offset {i * index.block_size}) differs from the backup")
    report.sha256 = whole.hexdigest()
    return report


def check_filesystems(image: str, report: CheckReport, scratch: str) -> None:
    """Run each ext/FAT file system's own read-only check; a partition is copied out to a file first
    (the tools take a device or a file, not an offset)."""
    with open(image, "rb") as fh:
        volumes = [v for v in find_volumes(fh, os.path.getsize(image)) if v.fs in FSCK]
    for v in volumes:
        tool = FSCK[v.fs]
        if shutil.which(tool[0]) is None:
            report.filesystems.append({"volume": v.name or "disk", "fs": v.fs, "ok": None,
                                       "output": f"{tool[0]} is not installed: not checked"})
            continue
        target, copied = image, None
        if v.offset or v.size != os.path.getsize(image):
            copied = target = _copy_range(image, v.offset, v.size, scratch)
        try:
            done = subprocess.run([*tool, target], capture_output=True, text=True, timeout=FSCK_TIMEOUT,
                                  stdin=subprocess.DEVNULL)
            ok, output = done.returncode == 0, (done.stdout + done.stderr)[-2000:]
        except subprocess.TimeoutExpired:
            ok, output = False, f"{tool[0]} did not finish in {FSCK_TIMEOUT} s"
        finally:
            if copied:
                os.unlink(copied)
        report.filesystems.append({"volume": v.name or "disk", "fs": v.fs, "ok": ok, "output": output})
        if not ok:
            report.problem(f"{' '.join(tool)} found errors in the {v.fs} file system of {v.name or 'the disk'}")


def _copy_range(image: str, offset: int, size: int, scratch: str) -> str:
    fd, path = tempfile.mkstemp(prefix="volume-", suffix=".img", dir=scratch)
    with open(image, "rb") as src, os.fdopen(fd, "wb") as dst:
        left = size
        while left:
            n = os.copy_file_range(src.fileno(), dst.fileno(), left, offset + size - left)
            if n == 0:
                break
            left -= n
    return path


# ------------------------------------------------------------------------------------ trees
def check_restored_tree(cs: ChunkStore, backup_id: str, root: str) -> CheckReport:
    report = CheckReport(backup_id, "tree")
    chunks = _ChunkCache(cs)
    base = os.fsencode(root)
    for e in CatalogReader(cs, load_index(cs, backup_id, refs=False)).entries():
        report.checked += 1
        where = base + b"/" + e.path if e.path else base
        shown = "/" + e.path.decode(errors="replace")
        try:
            st = os.lstat(where)
        except FileNotFoundError:
            report.problem(f"{shown} was not restored")
            continue
        if e.type == FILE:
            _check_file(e, where, st, shown, chunks, report)
        elif e.type == DIR and not stat.S_ISDIR(st.st_mode):
            report.problem(f"{shown} should be a directory")
        elif e.type == SYMLINK and (not stat.S_ISLNK(st.st_mode) or os.readlink(where) != e.link):
            report.problem(f"{shown} should be a symlink to {e.link.decode(errors='replace')}")
    return report


def _check_file(e: Entry, where: bytes, st: os.stat_result, shown: str, chunks: "_ChunkCache",
                report: CheckReport) -> None:
    if not stat.S_ISREG(st.st_mode):
        report.problem(f"{shown} should be a regular file")
        return
    if st.st_size != e.size:
        report.problem(f"{shown} has {st.st_size} bytes, the backup {e.size}")
        return
    fd = os.open(where, os.O_RDONLY)
    try:
        for d, length, offset, in_chunk in e.chunk_offsets():
            piece = os.pread(fd, length, offset)
            report.bytes_checked += len(piece)
            if in_chunk == 0 and chunks.cs.codec.digest(piece) == d:
                continue  # a whole chunk, as stored
            if piece != chunks.get(d)[in_chunk:in_chunk + length]:
                report.problem(f"{shown} differs from the backup at offset {offset}")
                return
    finally:
        os.close(fd)


class _ChunkCache:
    """The few chunks a tree check reads from the vault (shared bundle chunks: many small files use one)."""

    def __init__(self, cs: ChunkStore, keep: int = 8):
        self.cs, self.keep = cs, keep
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()

    def get(self, digest: bytes) -> bytes:
        data = self._cache.pop(digest, None)
        if data is None:
            data = self.cs.get_chunk(digest)
        self._cache[digest] = data
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return data
