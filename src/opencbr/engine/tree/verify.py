"""Verify a tree backup: read back and check every chunk it references (file data and catalog).

Uses the engine's bulk reader (grouped by pack, coalesced range reads, digest check on every chunk).
Damaged or missing chunks are mapped back to the files that use them with a second pass over the
catalog (only when something is wrong, so a clean verify reads the catalog once, as chunks).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

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
                workers: int = 3) -> VerifyReport:
    """Check every chunk of tree backup ``backup_id``. ``progress(chunks_done, chunks_total)``."""
    t0 = time.monotonic()
    cs = chunkstore_of(repo_or_chunkstore)
    dix = load_index(cs, backup_id)
    refs = cs.read_manifest(backup_id).ref_set()
    report = VerifyReport(backup_id, 0, 0)
    bad: dict[bytes, BadChunk] = {}

    def on_bad(d: bytes, e: Exception) -> None:
        item = bad[d] = BadChunk(d.hex(), str(e))
        (report.missing if isinstance(e, Missing) else report.damaged).append(item)

    totals = check_chunks(cs, list(refs), on_bad, progress=progress, workers=workers)
    report.chunks_checked, report.bytes_checked = totals.chunks_checked, totals.bytes_checked
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
