"""``Repository``: one vault's data in an object store, the entry point the services call.

::

    from opencbr.engine import Repository, LockTiming
    from opencbr.storage import open_store

    store = open_store("file:///var/lib/opencbr/objects")
    repo = Repository.create(store, f"vaults/{vault_id}/", master_key, encrypted=True)
    repo = Repository.open(store, f"vaults/{vault_id}/", master_key)
    res = repo.backup_disk("/dev/vg/disk1", backup_id=..., meta={...}, parent_backup_id=...)
    res = repo.backup_tree("/srv/data", backup_id=..., meta={...}, parent_backup_id=...)
    # the same calls for disk and tree backups (the manifest says which kind a backup is):
    repo.restore(backup_id, target); repo.restore_path(backup_id, "/etc/hosts", "/tmp/out")
    repo.verify(backup_id); repo.list_dir(backup_id, "/etc"); repo.lookup(backup_id, "/etc/hosts", "/etc")
    repo.export_disk(backup_id, "/tmp/disk.raw"); image = repo.disk_image(backup_id)  # disks only
    repo.delete_backup(backup_id); repo.gc(); repo.usage()

The repository is self-describing: ``config`` holds the format, the chunking parameters and the wrapped
keys; manifests hold each backup's ``meta`` verbatim, so a catalog can be rebuilt from the store alone
(``list_manifests`` + ``read_manifest``).
"""

from __future__ import annotations

import json
import os
import threading
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Callable

from ..domain.vault_lock import VaultLock
from ..storage import ObjectStore
from .chunks import attachments, retention_lock
from .chunks.crypto import RepoKeys
from .chunks.locks import LockTiming
from .chunks.manifests import Manifest
from .chunks.store import ChunkStore
from .disk.fixed_index import DEFAULT_BLOCK_SIZE
from .errors import Conflict, Damaged, InvalidArgument, Missing

if TYPE_CHECKING:  # each kind's engine and GC load on first use: a tree backup's process needs no other
    from .chunks.gc import GCResult
    from .chunks.reader import VerifyReport
    from .disk.backup import DiskBackupResult
    from .disk.export import DiskImage
    from .disk.restore import RestoreResult
    from .diskfs import DiskFileRestoreResult
    from .tree import ListEntry, TreeBackupResult, TreeRestoreResult

CONFIG_KEY = "config"
FORMAT = "opencbr-repository"
VERSION = 1
DEFAULT_PACK_SIZE = 8 << 20  # measured: 8 MiB ~ as fast as 16/32 MiB, ~60 MB less peak RSS

Progress = Callable[[int, int], None]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _created(header: dict) -> datetime:
    """When a backup was made, naive UTC: the catalog's time its ``meta`` carries (the one the services'
    lock checks use), else the engine's own."""
    meta = header.get("meta") or {}
    created = datetime.fromisoformat(meta.get("created_at") or header["created"])
    return created.astimezone(timezone.utc).replace(tzinfo=None) if created.tzinfo else created


def _index_damage(found: dict[str, str]) -> list[dict]:
    return [{"object": name, "reason": reason} for name, reason in found.items()]


def _norm_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return prefix + "/" if prefix else ""


class Repository:
    """One vault's repository. Thread-safe for concurrent operations from one process; several
    processes/machines may use the same repository at once (see chunks/gc.py for the coordination)."""

    def __init__(self, store: ObjectStore, prefix: str, config: dict, keys: RepoKeys | None, *,
                 lock_timing: LockTiming | None = None, workers: int | None = None):
        self.store = store
        self.prefix = prefix
        self.config = config
        self.id: str = config["id"]
        self.block_size: int = int(config["block_size"])
        self.workers = workers
        #: Naive-UTC "now" for the vault lock's checks; the services set their own clock.
        self.clock: Callable[[], datetime] = _utcnow
        self.chunks = ChunkStore(
            store, prefix, keys,
            pack_size=int(config["pack_size"]),
            max_chunk=max(self.block_size, 16 << 20),  # tree chunks reach 4 MiB (FastCDC max)
            lock_timing=lock_timing,
            upload_threads=int(config.get("upload_threads", 2)),
        )
        if store.capabilities.local_root is None:
            self.chunks.upload_threads = max(self.chunks.upload_threads, 4)  # hide remote request latency

    # -- lifecycle -------------------------------------------------------------------------------
    @classmethod
    def create(cls, store: ObjectStore, prefix: str, master_key: bytes | None, encrypted: bool = True, *,
               block_size: int = DEFAULT_BLOCK_SIZE, pack_size: int = DEFAULT_PACK_SIZE,
               lock_timing: LockTiming | None = None) -> "Repository":
        """Create a repository under ``prefix`` (Conflict if one exists there). ``master_key``
        (32 bytes) wraps the repository's generated keys; it may be None only when not encrypted."""
        prefix = _norm_prefix(prefix)
        if block_size < 4096 or block_size > (4 << 20) or block_size & (block_size - 1):
            raise InvalidArgument("block size must be a power of two between 4 KiB and 4 MiB")
        if pack_size < block_size * 2:
            raise InvalidArgument("pack size must hold at least two blocks")
        repo_id = os.urandom(16).hex()
        config = {
            "format": FORMAT,
            "version": VERSION,
            "id": repo_id,
            "created": datetime.now(timezone.utc).isoformat(),
            "encrypted": bool(encrypted),
            "block_size": block_size,
            "pack_size": pack_size,
            "chunk_digest": "blake3-keyed" if encrypted else "blake3",
            "compression": "zstd",
            "cipher": "aes-256-gcm" if encrypted else None,
        }
        keys = None
        if encrypted:
            if master_key is None:
                raise InvalidArgument("an encrypted repository needs a 32-byte master key")
            keys = RepoKeys.generate()
            config["keys"] = keys.wrap(master_key, repo_id)
        if not store.put_if_absent(prefix + CONFIG_KEY, json.dumps(config, indent=1).encode()):
            raise Conflict(f"a repository already exists at {prefix!r}")
        return cls(store, prefix, config, keys, lock_timing=lock_timing)

    @classmethod
    def open(cls, store: ObjectStore, prefix: str, master_key: bytes | None, *,
             lock_timing: LockTiming | None = None) -> "Repository":
        """Open an existing repository (Missing if none; InvalidArgument for a wrong master key)."""
        prefix = _norm_prefix(prefix)
        try:
            raw = store.get(prefix + CONFIG_KEY)
        except KeyError:
            raise Missing(f"no repository at {prefix!r}") from None
        try:
            config = json.loads(raw)
        except ValueError:
            raise Damaged(f"repository config at {prefix!r} is unreadable") from None
        if config.get("format") != FORMAT or int(config.get("version", 0)) > VERSION:
            raise Damaged(f"unsupported repository format at {prefix!r}")
        keys = None
        if config.get("encrypted"):
            if master_key is None:
                raise InvalidArgument("this repository is encrypted: a master key is required")
            keys = RepoKeys.unwrap(config["keys"], master_key, config["id"])
        return cls(store, prefix, config, keys, lock_timing=lock_timing)

    @property
    def encrypted(self) -> bool:
        return bool(self.config.get("encrypted"))

    def destroy(self) -> int:
        """Delete every object under the prefix (the vault and all its backups). Returns the count.
        Conflict while the vault's lock holds (docs/vault-lock.md)."""
        lock = self.retention_lock()
        if lock is not None and lock.active(self.clock()):
            raise Conflict(f"the vault is under a {lock.mode} lock until {lock.until.isoformat()}Z")
        n = 0
        for key, _ in list(self.store.list(self.prefix)):
            if key == self.prefix + CONFIG_KEY:
                continue
            self.store.delete(key)
            n += 1
        self.store.delete(self.prefix + CONFIG_KEY)  # last: a half-destroyed repository still opens
        return n + 1

    # -- disks -----------------------------------------------------------------------------------
    def backup_disk(self, source, *, backup_id: str, meta: dict, parent_backup_id: str | None = None,
                    full: bool = False, progress: Progress | None = None,
                    cancel: threading.Event | None = None) -> DiskBackupResult:
        """Back up a disk. ``source``: a path (image file or block device) or a
        :class:`~opencbr.engine.disk_source.DiskSource`. Every block is read and hashed; only chunks the
        repository lacks are stored (``full=True``: all are stored again). ``meta`` is kept verbatim
        in the manifest. ``progress(done_bytes, total_bytes)``; ``cancel`` -> BackupCancelled with
        nothing published. Conflict if ``backup_id`` exists."""
        from .disk.backup import backup_disk

        return backup_disk(self.chunks, source, backup_id=backup_id, meta=meta,
                           parent_backup_id=parent_backup_id, full=full, progress=progress, cancel=cancel,
                           block_size=self.block_size, workers=self.workers)

    def restore_disk(self, backup_id: str, target_path: str, *, progress: Progress | None = None,
                     cancel: threading.Event | None = None, truncate: bool = True,
                     target_fd: int | None = None) -> RestoreResult:
        """Restore onto ``target_path`` (created if missing; an existing target must be at least the
        backup's size, else InvalidArgument). Writes only blocks that differ; zero blocks become holes;
        fsyncs at the end. ``truncate``: a regular file ends at the backup's size (guide 13.4.5).
        ``target_fd``: the target already open read-write (then ``target_path`` only names it)."""
        from .disk.restore import restore_disk

        return restore_disk(self.chunks, backup_id, target_path, progress=progress, cancel=cancel,
                            truncate=truncate, target_fd=target_fd)

    def export_disk(self, backup_id: str, out_path: str, progress: Progress | None = None,
                    cancel: threading.Event | None = None) -> RestoreResult:
        """Write the backup as a sparse raw image file (replaces ``out_path``)."""
        from .disk.export import export_disk

        return export_disk(self.chunks, backup_id, out_path, progress=progress, cancel=cancel)

    def disk_image(self, backup_id: str) -> DiskImage:
        """The raw image of a disk backup, to stream (InvalidArgument for a tree backup)."""
        from .disk.export import DiskImage

        return DiskImage(self.chunks, backup_id)

    # -- trees -----------------------------------------------------------------------------------
    def backup_tree(self, root, *, backup_id: str, meta: dict, parent_backup_id: str | None = None,
                    full: bool = False, progress: Progress | None = None, cancel: threading.Event | None = None,
                    root_fd: int | None = None) -> TreeBackupResult:
        """Back up the directory tree at ``root`` (``root_fd``: the root already open, checked by the
        caller). Files unchanged since ``parent_backup_id`` are not read again (``full``: all are).
        Unreadable files make the backup partial, never failed (see TreeBackupResult.warnings)."""
        from .tree import backup_tree

        return backup_tree(self, root, backup_id=backup_id, meta=meta, parent_backup_id=parent_backup_id,
                           full=full, progress=progress, cancel=cancel, root_fd=root_fd)

    # -- either kind -----------------------------------------------------------------------------
    def kind(self, backup_id: str) -> str:
        """``"disk"`` or ``"tree"``: what the backup's manifest holds (Missing if there is none)."""
        return self.chunks.manifest_header(backup_id).get("type", "disk")

    def restore(self, backup_id: str, target_path: str, *, progress: Progress | None = None,
                cancel: threading.Event | None = None,
                target_fd: int | None = None) -> RestoreResult | TreeRestoreResult:
        """Restore a whole backup over its resource: a disk onto ``target_path`` (see
        :meth:`restore_disk`), a tree into the directory ``target_path``. ``target_fd``: the target
        already open (checked by the caller). Cancelled -> RestoreCancelled."""
        if self.kind(backup_id) == "tree":
            from .tree import restore_tree

            return restore_tree(self, backup_id, target_path, progress=progress, cancel=cancel, target_fd=target_fd)
        return self.restore_disk(backup_id, target_path, progress=progress, cancel=cancel, target_fd=target_fd)

    def restore_path(self, backup_id: str, path: str, target_dir: str, *, progress: Progress | None = None,
                     cancel: threading.Event | None = None,
                     target_fd: int | None = None) -> TreeRestoreResult | DiskFileRestoreResult:
        """Restore one file or directory of a backup (of a file system inside a disk backup) to
        ``target_dir/<its name>``, beside what ``target_dir`` holds. ``target_fd``: the directory
        already open. The result's ``bytes_written`` counts the data written."""
        if self.kind(backup_id) == "tree":
            from .tree import restore_tree

            return restore_tree(self, backup_id, target_dir, subpath=path, allow_nonempty=True, progress=progress,
                                cancel=cancel, target_fd=target_fd)
        from .diskfs import restore_disk_path

        return restore_disk_path(self, backup_id, path, target_dir, target_fd=target_fd)

    def verify(self, backup_id: str, progress: Progress | None = None) -> VerifyReport:
        """Re-read and check every chunk of a backup; report damaged/missing ones (and, for disks, the
        offsets they affect). ``progress(chunks_done, chunks_total)``. The index objects that list the
        packs it read are checked after, not every one of the vault (time linear in the backup, not in
        the vault): the report's ``index_damaged`` names those damaged, and every one the local index
        could not read (see :meth:`verify_index` for all of the vault's)."""
        packs: set[str] = set()
        if self.kind(backup_id) == "tree":
            from .tree import verify_tree

            report = verify_tree(self, backup_id, progress=progress, packs=packs)
        else:
            from .disk.restore import verify_disk

            report = verify_disk(self.chunks, backup_id, progress=progress, packs=packs)
        report.index_damaged = _index_damage(self.chunks.damaged_index_objects(packs))
        return report

    def verify_index(self) -> list[dict]:
        """Read and check every index object of the vault (one at a time): ``[{"object", "reason"}]`` of
        those damaged (a vault's verify: ~40 bytes read per chunk of the vault, beside the chunks)."""
        return _index_damage(self.chunks.damaged_index_objects(None))

    def list_dir(self, backup_id: str, path: str | bytes = "/") -> list[ListEntry]:
        """The entries of directory ``path`` in a backup: a tree's catalog, or the partitions and files
        of the file systems inside a disk backup. Missing if there is no such directory."""
        from .tree import list_backup

        return list_backup(self, backup_id, path)

    def lookup(self, backup_id: str, *paths: str) -> None:
        """Check that every one of ``paths`` is in the backup (Missing if not; InvalidArgument if
        malformed). A disk backup's file systems are opened once for all of them."""
        if self.kind(backup_id) == "tree":
            from .tree import stat_path

            for path in paths:
                stat_path(self, backup_id, path)
        else:
            from .diskfs import DiskBrowser

            browser = DiskBrowser(self, backup_id)
            for path in paths:
                browser.lookup(path)

    # -- backups ---------------------------------------------------------------------------------
    def list_manifests(self) -> list[str]:
        """Backup ids present in the store."""
        return self.chunks.list_manifests()

    def read_manifest(self, backup_id: str) -> dict:
        """The manifest header of a backup: type, disk_size, block_size, parent, full, created,
        meta (verbatim), stats (bytes_read, zero_blocks, new_chunks, added_bytes, ...). Its refs are not
        read (a large disk's are in segment objects)."""
        return self.chunks.manifest_header(backup_id)

    def manifest(self, backup_id: str) -> Manifest:
        return self.chunks.read_manifest(backup_id)

    def backup_added_bytes(self, backup_id: str) -> int:
        """Stored bytes this backup added to the repository when it was made."""
        return int(self.read_manifest(backup_id)["stats"]["added_bytes"])

    def delete_backup(self, backup_id: str, *, unfinished: bool = False) -> None:
        """Remove the backup's manifest and attachments (idempotent). Its chunks go at the next gc()
        unless other backups use them (guide 13.2.11). Conflict when the vault's lock protects it: the
        store itself refuses, whatever a catalog says (docs/vault-lock.md). ``unfinished``: the caller
        withdraws what an attempt that never completed stored (failed, cancelled, interrupted, a copy
        never used), which no lock protects."""
        if not unfinished:
            self._check_unlocked(backup_id)
        self.chunks.delete_manifest(backup_id)
        attachments.delete_all(self.chunks, backup_id)

    def _check_unlocked(self, backup_id: str) -> None:
        lock = self.retention_lock()
        now = self.clock()
        if lock is None or not lock.active(now):
            return
        try:
            created = _created(self.read_manifest(backup_id))
        except Missing:
            return  # already gone: deleting is idempotent
        except (Damaged, KeyError, TypeError, ValueError):
            created = now  # its age cannot be told: it is protected for the lock's whole retention
        if lock.protects(created, now):
            raise Conflict(f"backup {backup_id} is protected by the vault's {lock.mode} lock")

    # -- the vault lock (docs/vault-lock.md) -------------------------------------------------------
    def retention_lock(self) -> VaultLock | None:
        """The vault's lock as the store records it (None: never locked, or lifted)."""
        record = retention_lock.get(self.chunks)
        return VaultLock.from_record(record) if record else None

    def set_retention_lock(self, lock: VaultLock | None) -> None:
        """Record the lock in the store (None: remove it). The services decide who may change it."""
        if lock is None:
            retention_lock.remove(self.chunks)
        else:
            retention_lock.put(self.chunks, lock.to_record())

    def put_attachment(self, backup_id: str, name: str, data: bytes) -> int:
        """Store a small object with a backup (sealed like its manifest; see chunks/attachments.py)."""
        return attachments.put(self.chunks, backup_id, name, data)

    def get_attachment(self, backup_id: str, name: str) -> bytes:
        """A backup's attachment (Missing if it has none of that name)."""
        return attachments.get(self.chunks, backup_id, name)

    def attachment_names(self, backup_id: str) -> list[str]:
        return attachments.names(self.chunks, backup_id)

    def gc(self, progress: Progress | None = None) -> GCResult:
        """Remove chunks no backup references and repack partly dead packs; safe with backups running
        (see chunks/gc.py). Conflict if another GC runs."""
        from .chunks.gc import run_gc

        return run_gc(self.chunks, progress)

    def usage(self) -> int:
        """Exact stored bytes of the distinct chunks the repository's backups reference, and of their
        attachments (guide 13.3.3)."""
        return self.chunks.usage() + attachments.stored_bytes(self.chunks)

    def stored_bytes(self) -> int:
        """Bytes of all objects under the prefix (physical footprint, including garbage not yet
        collected)."""
        return sum(size for _, size in self.store.list(self.prefix))
