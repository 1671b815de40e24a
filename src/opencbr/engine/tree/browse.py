"""Browsing a backup without reading file contents (``cbr backup ls BACKUP [PATH]``).

:func:`list_tree` lists one directory of a tree backup from its catalog alone. It starts at the
catalog chunk that can hold the directory (bisect on first keys) and, while it walks the directory's
children, skips every catalog chunk that lies wholly inside one child's subtree (its first key and the
next chunk's first key are both below that child), so listing the root of a million-file backup reads
a few catalog chunks, not the whole catalog.

:func:`list_backup` dispatches on the backup type: tree backups here, disk backups to
:mod:`opencbr.engine.diskfs` (ext4/FAT file systems inside the disk image).
"""

from __future__ import annotations

from ..errors import Damaged
from .catalog import CatalogReader
from .common import chunkstore_of, in_subtree, load_index, not_found, parse_path, show
from .entry import DIR, Entry, RecordError, decode, iter_records, path_key, record_path
from .results import ListEntry


def to_list_entry(e: Entry) -> ListEntry:
    return ListEntry(
        name=show(e.name)[1:] if e.path else "/", path=show(e.path), type=e.type_name, size=e.size, mode=e.mode,
        mtime=e.mtime_ns / 1e9, uid=e.uid, gid=e.gid,
        link_target=show(e.link)[1:] if e.link else None,
    )


def stat_path(repo_or_chunkstore, backup_id: str, path: str | bytes = "/") -> Entry:
    """The catalog entry of one path (Missing if the backup has no such path)."""
    cs = chunkstore_of(repo_or_chunkstore)
    dix = load_index(cs, backup_id, refs=False)
    p = parse_path(path)
    k = path_key(p)
    for e in CatalogReader(cs, dix).entries(k):
        if e.path == p:
            return e
        break
    raise not_found(backup_id, p)


def list_tree(repo_or_chunkstore, backup_id: str, path: str | bytes = "/") -> list[ListEntry]:
    """Entries directly inside directory ``path`` of tree backup ``backup_id``, in name order (a
    file path lists just that file). Missing if the path is not in the backup."""
    cs = chunkstore_of(repo_or_chunkstore)
    dix = load_index(cs, backup_id, refs=False)
    reader = CatalogReader(cs, dix)
    p = parse_path(path)
    key = path_key(p)
    cat = dix.catalog
    i = dix.start_chunk(key)
    out: list[ListEntry] = []
    found = False
    child_dir: bytes | None = None  # key of the last child directory seen (its subtree can be skipped)
    while i < len(cat):
        try:
            for rec in iter_records(reader._fetch(i)):
                k = path_key(record_path(rec))
                if not found:
                    if k < key:
                        continue
                    if k != key:
                        raise not_found(backup_id, p)
                    found = True
                    e = decode(rec)
                    if e.type != DIR:
                        return [to_list_entry(e)]
                    continue
                if not in_subtree(k, key):
                    return out
                rest = k[len(key) + 1:] if key else k
                if b"\0" in rest:
                    continue  # deeper than a direct child
                e = decode(rec)
                out.append(to_list_entry(e))
                child_dir = k if e.type == DIR else None
        except RecordError as exc:
            raise Damaged(f"backup {backup_id}: catalog chunk {i}: {exc}", backup_id=backup_id) from None
        i += 1
        if not found:
            if i >= len(cat) or cat[i].first_key > key:
                raise not_found(backup_id, p)
            continue
        # Skip chunks that hold only descendants of the current child directory.
        while (child_dir is not None and i + 1 < len(cat) and in_subtree(cat[i].first_key, child_dir)
               and in_subtree(cat[i + 1].first_key, child_dir)):
            i += 1
    if not found:
        raise not_found(backup_id, p)
    return out


def list_backup(repo_or_chunkstore, backup_id: str, path: str | bytes = "/") -> list[ListEntry]:
    """List ``path`` in any backup: a tree backup's catalog, or the file systems inside a disk backup
    (see :func:`opencbr.engine.diskfs.list_disk_tree`)."""
    cs = chunkstore_of(repo_or_chunkstore)
    typ = cs.manifest_header(backup_id).get("type")  # (not the refs: a disk's are 32 bytes per block)
    if typ == "disk":
        from ..diskfs import list_disk_tree

        return list_disk_tree(cs, backup_id, path)
    return list_tree(cs, backup_id, path)
