"""Plain result types of the tree engine (what the services store in tasks and show to users)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class TreeWarning:
    """Something the backup or restore could not do for one path. ``partial`` is True when data the
    user expects is missing (an unreadable file or directory); False for benign events (a file that
    vanished during the backup, a mount point not entered)."""

    path: str
    message: str
    partial: bool = True

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TreeBackupResult:
    backup_id: str
    files: int  # regular files in the catalog (hard-link members counted each)
    dirs: int
    symlinks: int
    specials: int  # fifos, sockets, devices
    total_bytes: int  # logical size of the regular files (holes included)
    bytes_read: int  # file bytes actually read (unchanged files are not read)
    reused_files: int  # files whose chunk list came from the parent backup
    new_chunks: int
    added_bytes: int  # stored bytes of chunks the repository did not hold before
    written_bytes: int
    catalog_chunks: int
    catalog_bytes: int  # plaintext size of the catalog
    manifest_bytes: int
    partial: bool  # some data could not be read: see warnings
    warnings: list[TreeWarning] = field(default_factory=list)
    warnings_dropped: int = 0  # warnings beyond the kept ones (counted, not listed)
    duration: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TreeRestoreResult:
    backup_id: str
    target: str
    files: int
    dirs: int
    symlinks: int
    specials: int
    hardlinks: int  # entries restored as links to an earlier member of their group
    bytes_written: int
    warnings: list[TreeWarning] = field(default_factory=list)
    duration: float = 0.0
    processes: int = 1  # how many processes restored (see restore/parts.py)
    parts_peak_rss: list[int] = field(default_factory=list)  # bytes, each forked process's peak
    # the apparent size of the regular files restored, each hard-linked one once: what walking the
    # restored tree would count (a new file system's size, without that walk)
    file_bytes: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ListEntry:
    """One row of a backup listing (``cbr backup ls``)."""

    name: str
    path: str  # '/'-rooted path inside the backup
    type: str  # file, dir, symlink, chardev, blockdev, fifo, socket
    size: int
    mode: int  # permission bits and type (st_mode)
    mtime: float  # seconds since the epoch
    uid: int = 0
    gid: int = 0
    link_target: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)
