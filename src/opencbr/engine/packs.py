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
from ..storage.aligned import BufferPool, aligned_buffer
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
    """A complete pack, ready to be written: its id, bytes, and entries (for the index). ``release``
    must be called once its bytes were written (it hands a pooled buffer back)."""

    pack_id: str
    data: bytes | memoryview
    entries: list[PackEntry] = field(default_factory=list)
    buffer: object = None
    pool: BufferPool | None = None

    def release(self) -> None:
        if self.pool is not None and self.buffer is not None:
            self.pool.give(self.buffer)
        self.buffer = self.pool = None
        self.data = b""


class PackWriter:
    """Collects records from many threads and cuts packs of about ``target_size`` bytes.

    ``add`` returns a :class:`FinishedPack` when the record completed one (the caller hands it to the
    uploader), else None. ``finish`` cuts the last, partial pack.

    With a ``pool`` (backup sessions), records are copied straight into a page-aligned buffer from the
    pool, which the store can write with direct I/O and which comes back for the next pack: one copy
    per record and no fresh 8 MiB allocation (page faults) per pack. Without one (GC), records are
    joined at the end.
    """

    def __init__(self, sealer: Sealer, target_size: int, pool: BufferPool | None = None):
        self._sealer = sealer
        self.target_size = target_size
        self._pool = pool
        self._lock = threading.Lock()
        self._records: list[bytes] = []
        self._buf = None
        self._entries: list[PackEntry] = []
        self._size = 0

    def _room(self, need: int) -> None:
        """Make the current pooled buffer hold ``need`` bytes (a rare oversized pack grows it)."""
        if self._buf is None:
            self._buf = self._pool.take()
        if need > len(self._buf):
            bigger = aligned_buffer(need + need // 2)
            bigger[:self._size] = self._buf[:self._size]
            self._pool.give(self._buf)
            self._buf = bigger

    def add(self, digest: bytes, record) -> FinishedPack | None:
        """``record``: bytes, or a tuple of parts to be stored back to back (ChunkCodec.encode_parts)."""
        parts = record if isinstance(record, tuple) else (record,)
        n = sum(len(p) for p in parts)
        with self._lock:
            self._entries.append(PackEntry(digest, self._size, n))
            if self._pool is None:  # (kept until the cut: views of a caller's buffer are copied)
                self._records.extend(bytes(p) if isinstance(p, memoryview) else p for p in parts)
            else:
                self._room(self._size + n)
                at = self._size
                for p in parts:
                    self._buf[at:at + len(p)] = p
                    at += len(p)
            self._size += n
            if self._size < self.target_size:
                return None
            return self._cut()

    def finish(self) -> FinishedPack | None:
        with self._lock:
            if not self._entries:
                return None
            return self._cut()

    def _cut(self) -> FinishedPack:
        """Seal the trailer and take the pack (under the lock: a pooled buffer is filled in place)."""
        records, entries, size, buf = self._records, self._entries, self._size, self._buf
        self._records, self._entries, self._size, self._buf = [], [], 0, None
        trailer = self._sealer.seal(b"".join(_ENTRY.pack(e.digest, e.length) for e in entries), TRAILER_PURPOSE)
        tail = trailer + _FOOTER.pack(len(trailer), PACK_MAGIC)
        if self._pool is None:
            return FinishedPack(new_pack_id(), b"".join((*records, tail)), entries)
        self._buf = buf
        self._size = size
        self._room(size + len(tail))
        buf, self._buf, self._size = self._buf, None, 0
        buf[size:size + len(tail)] = tail
        return FinishedPack(new_pack_id(), memoryview(buf)[:size + len(tail)], entries, buf, self._pool)


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
