"""Chunks a verify found damaged (or missing), recorded in the store so that the next backup of the live
source stores them again (kopia#3492: repair from the live source).

A write session deduplicates against the index: a chunk the index lists is never stored again, so a
damaged copy would stay the only copy forever. The record is one small object per chunk,
``damaged/<digest hex>``, in the repository itself -- not in the catalog -- because every writer of the
vault reads it: workers on any machine and agents' backups through the remote chunk service, all of
which open a :class:`~opencbr.engine.chunks.session.WriteSession`, which treats a recorded chunk as
absent. The new copy goes into a new pack and a newer index object, and the index prefers the newest
copy (locations.py), so readers find the good one first; the damaged copy stays a fallback until GC
repacks it. A verify that reads a recorded chunk intact again clears its record.
"""

from __future__ import annotations

import json
from typing import Iterable

from .store import ChunkStore

DAMAGE_DIR = "damaged/"


def record_damaged(cs: ChunkStore, digests: Iterable[bytes], note: dict) -> None:
    """Record each of ``digests`` as damaged (``note``: who found it, when; kept for the operator)."""
    body = json.dumps(note, sort_keys=True).encode()
    for d in digests:
        cs.store.put(cs.k(DAMAGE_DIR + d.hex()), body)


def damaged_digests(cs: ChunkStore) -> set[bytes]:
    """Every chunk recorded as damaged now."""
    n = len(cs.k(DAMAGE_DIR))
    out = set()
    for key, _ in cs.store.list(cs.k(DAMAGE_DIR)):
        try:
            out.add(bytes.fromhex(key[n:]))
        except ValueError:
            continue  # not one of ours
    return out


def clear_damaged(cs: ChunkStore, digests: Iterable[bytes]) -> None:
    for d in digests:
        cs.store.delete(cs.k(DAMAGE_DIR + d.hex()))
