"""Packs of unverified records: written by a writer the vault does not check record by record (an
agent, through the remote chunk service), trusted by that writer alone until something verifies them.

Why: an agent cuts, hashes, compresses and encrypts on its host; checking each record on the service
(decrypt, decompress, hash again) costs about as much CPU as the agent's own hashing and decompression
together, and it protects only the *other* writers of the vault. The agent's own backups are only ever
as good as the agent that read them: a record it lies about spoils nothing but its own data. So:

- a write session of writer ``W`` (an agent's id) records the packs it indexes here, *before* their
  index object (:func:`note_unverified`): a chunk is never in the index without its writer being known;
- ``W`` deduplicates against its own unverified packs like any other; every other writer (other agents,
  the service's own backups) treats another writer's unverified copy as absent until it has read that
  copy and checked it against its digest (``WriteSession``: verified on demand, then deduplicated);
- readers prefer a verified copy of a chunk over an unverified one, and a reader that does not hash what
  it reads (a record sent on as it is, a body copied to another vault) checks records of unverified packs
  first (``ChunkStore.trusted_pack``);
- GC's repack checks every record it copies, so a repacked record is verified; :func:`prune_unverified`
  drops the packs that no longer exist and folds the marker objects into one per writer.

A chunk's copy that fails its check is skipped (logged): the writer that wanted it stores its own copy.

Layout: ``unverified/<time>-<rand>`` holding ``{"writer": W, "packs": [pack id, ...]}`` (JSON).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Iterable

from ..errors import Conflict
from .locations import new_index_name

UNVERIFIED_DIR = "unverified/"
#: The writer of packs GC lists again from their own trailers (gc.py): not known, so no writer's own.
UNATTRIBUTED = "(unattributed)"

log = logging.getLogger(__name__)


def note_unverified(cs, writer: str, pack_ids: Iterable[str]) -> None:
    """Record ``pack_ids`` as written by ``writer`` without a check (before they are indexed)."""
    packs = sorted(set(pack_ids))
    if packs:
        body = json.dumps({"writer": writer, "packs": packs}).encode()
        cs.store.put(cs.k(UNVERIFIED_DIR + new_index_name()), body, sync=True)


def marker_objects(cs) -> dict[str, tuple[str, list[str]]]:
    """``{object key: (writer, packs)}`` of every marker object (unreadable ones skipped). A marker
    listed and gone when read was folded by GC (:func:`prune_unverified`), which wrote the object
    replacing it first: the markers are listed again, else the packs it named would be taken for
    checked ones (another writer would deduplicate against them unchecked).

    A marker is never rewritten (a new key each time, and GC only deletes), so what was read of one is
    kept on local disk (``ChunkStore.marker_cache_path``; in memory without one) and only the markers
    written since are read: a session start or reader index refresh costs one listing, not one read
    per marker (one GET each on S3: thousands on a vault GC has not folded for long)."""
    cache = _load_cache(cs)
    for _attempt in range(10):
        out, vanished = {}, False
        for key, _ in cs.store.list(cs.k(UNVERIFIED_DIR)):
            if key in cache:  # (listed now, and its content cannot have changed)
                out[key] = cache[key]
                continue
            try:
                raw = cs.store.get(key)
            except KeyError:
                vanished = True  # deleted since listed (GC folded it): its replacement is listed next time
                break
            try:
                body = json.loads(raw)
                writer, packs = str(body["writer"]), [str(p) for p in body["packs"]]
            except (ValueError, TypeError, KeyError) as e:
                log.warning("unreadable marker of unverified packs %s: %s", key, e)
                continue
            out[key] = (writer, packs)
        if not vanished:
            _save_cache(cs, cache, out)
            return out
    raise Conflict("the markers of unverified packs kept changing while they were read; retry")


def _load_cache(cs) -> dict[str, tuple[str, list[str]]]:
    path = cs.marker_cache_path()
    if path is None:
        return cs.marker_cache
    try:
        with open(path, "rb") as f:
            body = json.load(f)
        return {str(k): (str(w), [str(p) for p in ps]) for k, (w, ps) in body.items()}
    except (OSError, ValueError, TypeError) as e:
        if not isinstance(e, FileNotFoundError):
            log.warning("cache of unverified-pack markers %s unreadable (%s): markers read again", path, e)
        return {}


def _save_cache(cs, old: dict, new: dict[str, tuple[str, list[str]]]) -> None:
    """Keep the markers listed now (those GC deleted drop out): bounded by what the store holds."""
    if new.keys() == old.keys():
        return
    path = cs.marker_cache_path()
    if path is None:
        cs.marker_cache = new
        return
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(tmp, "w") as f:
            json.dump(new, f)
        os.replace(tmp, path)  # (atomic: a concurrent reader sees the old copy or this one)
    except OSError as e:
        log.warning("cache of unverified-pack markers %s not written: %s", path, e)


def unverified_packs(cs) -> dict[str, str]:
    """``{pack id: writer}`` of every pack recorded as unverified."""
    return {p: writer for writer, packs in marker_objects(cs).values() for p in packs}


def prune_unverified(cs, markers: dict[str, tuple[str, list[str]]], exists) -> int:
    """GC: fold ``markers`` (:func:`marker_objects`, read *before* GC listed the packs, so that each
    pack they name was written before that listing) into one object per writer naming only the packs
    for which ``exists(pack_id)``; returns the objects deleted. Markers written since are not touched.

    A fold deletes nothing: the objects it replaces are deleted by the next GC, once the object naming
    their packs was in ``markers`` (there since before that GC began, and not deleted). A listing is no
    snapshot (a directory read, an S3 listing past a key's name): one running while GC wrote the new
    object and deleted the old could show neither, and its reader would take every pack they named for
    a checked one (and deduplicate against a forged record unchecked)."""
    by_writer: dict[str, list[tuple[str, set[str]]]] = {}
    for key, (writer, packs) in markers.items():
        by_writer.setdefault(writer, []).append((key, set(packs)))
    deleted = 0
    for writer, objs in by_writer.items():
        kept = {p for _k, packs in objs for p in packs if exists(p)}
        if len(objs) == 1 and objs[0][1] == kept:
            continue  # one object, naming only packs that are there
        # Newest first, an object goes when one kept already (an earlier fold's, say) names every pack of
        # it still there; the rest stay until the fold written here stands for them (the next GC).
        stay: list[set[str]] = []
        for key, packs in sorted(objs, reverse=True):
            if not packs & kept or any(packs & kept <= other for other in stay):  # (none there: nothing to name)
                cs.store.delete(key)
                deleted += 1
            else:
                stay.append(packs)
        if kept and not (len(stay) == 1 and stay[0] == kept):
            note_unverified(cs, writer, kept)
    return deleted
