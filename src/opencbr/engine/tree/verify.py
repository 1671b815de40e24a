"""Verify a tree backup: read back and check every chunk it references (file data and catalog).

Uses the engine's bulk reader (grouped by pack, coalesced range reads, digest check on every chunk).
Damaged or missing chunks are mapped back to the files that use them with a second pass over the
catalog (only when something is wrong, so a clean verify reads the catalog once, as chunks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..chunks.crypto import DIGEST_SIZE, ZERO_DIGEST
from ..chunks.digestset import DigestSet
from ..chunks.reader import VerifyReport, check_chunks
from ..errors import Missing
from .catalog import CatalogReader
from .common import Progress, chunkstore_of, load_index, show
from .entry import FILE


@dataclass
class BadChunk:
    digest: str
    reason: str
    paths: list[str] = field(default_factory=list)  # files using it (first 20)


def verify_tree(repo_or_chunkstore, backup_id: str, *, progress: Progress | None = None,
                workers: int = 3, packs: set[str] | None = None) -> VerifyReport:
    """Check every chunk of tree backup ``backup_id``. ``progress(refs_done, refs_total)``; ``packs``:
    the packs read are added."""
    t0 = time.monotonic()
    cs = chunkstore_of(repo_or_chunkstore)
    dix = load_index(cs, backup_id, refs=False)
    report = VerifyReport(backup_id, 0, 0)
    bad: dict[bytes, BadChunk] = {}

    def on_bad(d: bytes, e: Exception) -> None:
        item = bad[d] = BadChunk(d.hex(), str(e))
        (report.missing if isinstance(e, Missing) else report.damaged).append(item)

    _check_refs(cs, backup_id, on_bad, report, progress, workers, packs)
    if bad:
        catalog_digests = {c.digest for c in dix.catalog}
        if not (catalog_digests & bad.keys()):  # the catalog is readable: name the files
            for e in CatalogReader(cs, dix).entries():
                if e.type != FILE:
                    continue
                for d, _n, _o in e.chunks:
                    b = bad.get(d)
                    if b is not None and len(b.paths) < 20:
                        b.paths.append(show(e.path))
    report.duration = time.monotonic() - t0
    return report


#: refs whose chunks verify checks at a time (8 MiB of refs: a disk verify's window)
VERIFY_WINDOW_REFS = 1 << 18


def _check_refs(cs, backup_id: str, on_bad, report: VerifyReport, progress: Progress | None, workers: int,
                packs: set[str] | None) -> None:
    """Check each chunk the manifest references once, its refs streamed a window at a time and the
    chunks already checked in a :class:`DigestSet` (bounded memory: a Python set of a large tree's refs
    was ~100 bytes a chunk). ``progress(refs done, refs total)``."""
    total = cs.refs_length(cs.manifest_head(backup_id)) // DIGEST_SIZE if hasattr(cs, "refs_length") else 0
    _header, pieces = cs.manifest_refs_streamed(backup_id)
    checked = DigestSet(cs.memory_entries, cs.spill_dir)
    done = 0
    try:
        for window in _windows(pieces, VERIFY_WINDOW_REFS * DIGEST_SIZE):
            todo = [d for i in range(0, len(window), DIGEST_SIZE)
                    if (d := window[i:i + DIGEST_SIZE]) != ZERO_DIGEST and checked.add(d)]

            def window_progress(n: int, of: int, base=done, size=len(window) // DIGEST_SIZE) -> None:
                if progress is not None:
                    progress(base + (size * n // of if of else size), max(total, base + size))  # (none new: done)

            totals = check_chunks(cs, todo, on_bad, progress=window_progress, workers=workers, packs=packs)
            report.chunks_checked += totals.chunks_checked
            report.bytes_checked += totals.bytes_checked
            done += len(window) // DIGEST_SIZE
    finally:
        checked.close()


def _windows(pieces, size: int):
    """The bytes of ``pieces`` again, in windows of ``size`` (the last shorter)."""
    buf = bytearray()
    for piece in pieces:
        buf += piece
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)
