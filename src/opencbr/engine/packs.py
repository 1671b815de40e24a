"""Pack objects: many chunk records in one store object.

Small objects are expensive (an fsync each on a local disk, a request each on S3), so chunk records
are appended to a pack until it reaches the target size, and the pack is written as one object::

    record_0 | record_1 | ... | sealed trailer | trailer length (u32 LE) | b"OCBRPAK1"

The trailer lists ``(digest, length)`` of each record in order (offsets are cumulative), sealed like
every metadata blob, so the index of a repository can be rebuilt from its packs alone and GC can
account for packs that no index mentions. Pack objects live at ``data/<id[:2]>/<id>`` (a two-hex-digit
fan-out keeps local directories small); ids are random 128-bit hex strings.
"""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass, field

from ..domain.errors import DataCorruption
from .crypto import DIGEST_SIZE, Sealer

PACK_MAGIC = b"OCBRPAK1"
_FOOTER = struct.Struct("<I8s")
_ENTRY = struct.Struct(f"<{DIGEST_SIZE}sI")
TRAILER_PURPOSE = b"opencbr-pack-trailer"


def new_pack_id() -> str:
    return os.urandom(16).hex()


def pack_key(pack_id: str) -> str:
    return f"data/{pack_id[:2]}/{pack_id}"


@dataclass
class PackEntry:
    digest: bytes
    offset: int
    length: int


@dataclass
class FinishedPack:
    """A complete pack, ready to be written: its id, bytes, and entries (for the index)."""

    pack_id: str
    data: bytes
    entries: list[PackEntry] = field(default_factory=list)


class PackWriter:
    """Collects records from many threads and cuts packs of about ``target_size`` bytes.

    ``add`` returns a :class:`FinishedPack` when the record completed one (the caller hands it to the
    uploader), else None. ``finish`` cuts the last, partial pack.
    """

    def __init__(self, sealer: Sealer, target_size: int):
        self._sealer = sealer
        self.target_size = target_size
        self._lock = threading.Lock()
        self._records: list[bytes] = []
        self._entries: list[PackEntry] = []
        self._size = 0

    def add(self, digest: bytes, record: bytes) -> FinishedPack | None:
        with self._lock:
            self._entries.append(PackEntry(digest, self._size, len(record)))
            self._records.append(record)
            self._size += len(record)
            if self._size < self.target_size:
                return None
            records, entries = self._records, self._entries
            self._records, self._entries, self._size = [], [], 0
        return self._build(records, entries)

    def finish(self) -> FinishedPack | None:
        with self._lock:
            records, entries = self._records, self._entries
            self._records, self._entries, self._size = [], [], 0
        if not records:
            return None
        return self._build(records, entries)

    def _build(self, records: list[bytes], entries: list[PackEntry]) -> FinishedPack:
        trailer = self._sealer.seal(b"".join(_ENTRY.pack(e.digest, e.length) for e in entries), TRAILER_PURPOSE)
        data = b"".join((*records, trailer, _FOOTER.pack(len(trailer), PACK_MAGIC)))
        return FinishedPack(new_pack_id(), data, entries)


def build_pack(sealer: Sealer, records: list[tuple[bytes, bytes]]) -> FinishedPack:
    """One pack from ``(digest, record)`` pairs (used by GC when it repacks live chunks)."""
    w = PackWriter(sealer, 1 << 62)
    for d, r in records:
        w.add(d, r)
    p = w.finish()
    assert p is not None
    return p


def read_trailer(sealer: Sealer, blob_tail: bytes, pack_size: int, what: str) -> list[PackEntry]:
    """Parse a pack's trailer from the last bytes of the pack (``blob_tail`` must hold the whole
    trailer and footer; see :func:`trailer_length`)."""
    if len(blob_tail) < _FOOTER.size:
        raise DataCorruption(f"{what}: too short")
    tlen, magic = _FOOTER.unpack(blob_tail[-_FOOTER.size:])
    if magic != PACK_MAGIC or tlen + _FOOTER.size > len(blob_tail):
        raise DataCorruption(f"{what}: bad footer")
    sealed = blob_tail[-_FOOTER.size - tlen:-_FOOTER.size]
    raw = sealer.unseal(sealed, TRAILER_PURPOSE, what)
    if len(raw) % _ENTRY.size:
        raise DataCorruption(f"{what}: bad trailer")
    entries = []
    off = 0
    for d, ln in _ENTRY.iter_unpack(raw):
        entries.append(PackEntry(d, off, ln))
        off += ln
    if off + tlen + _FOOTER.size != pack_size:
        raise DataCorruption(f"{what}: trailer does not match the pack size")
    return entries


def trailer_length(footer: bytes) -> int:
    """Bytes of trailer+footer at the end of a pack, from its last 12 bytes."""
    tlen, magic = _FOOTER.unpack(footer[-_FOOTER.size:])
    if magic != PACK_MAGIC:
        raise DataCorruption("pack: bad footer")
    return tlen + _FOOTER.size


FOOTER_SIZE = _FOOTER.size
