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
from dataclasses import dataclass

from ...system.aligned import BufferPool, aligned_buffer
from ..errors import Damaged
from .crypto import DIGEST_SIZE, Sealer

PACK_MAGIC = b"OCBRPAK1"
_FOOTER = struct.Struct("<I8s")
_ENTRY = struct.Struct(f"<{DIGEST_SIZE}sI")
# A record in flight, packed as the index object stores it (locations.py): digest, offset, length.
_RECORD = struct.Struct(f"<{DIGEST_SIZE}sII")
TRAILER_PURPOSE = b"opencbr-pack-trailer"
# A pack is also cut at this many records: what a writer holds per pack in flight (its entries) and
# a trailer stay bounded when records are tiny (highly compressible blocks, small files); real 64 KiB
# blocks fill a pack by size long before (a few hundred records).
MAX_PACK_RECORDS = 8192


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
    records: bytes | bytearray = b""  # (digest, offset, length) of each record, in the index object's form
    buffer: object = None
    pool: BufferPool | None = None

    @property
    def count(self) -> int:
        return len(self.records) // _RECORD.size

    @property
    def entries(self) -> list[PackEntry]:
        return [PackEntry(d, off, ln) for d, off, ln in _RECORD.iter_unpack(self.records)]

    def release(self) -> None:
        if self.pool is not None and self.buffer is not None:
            self.pool.give(self.buffer)
        self.buffer = self.pool = None
        self.data = b""


class _Lane:
    """One pack being filled: its records (joined at the cut) or pooled buffer, entries and size.

    The entries are packed (40 bytes each, the form the index object stores), not a ``PackEntry`` per
    record: a pack holds up to ``MAX_PACK_RECORDS`` records and a backup session has about six packs in
    flight, whose ~50k entries as objects (~150 bytes with their digests) were ~7 MB that built up over
    the first gigabytes of a disk of small records and were freed out of order afterwards."""

    __slots__ = ("records", "buf", "entries", "size")

    def __init__(self) -> None:
        self.records: list[bytes] = []
        self.buf = None
        self.entries = bytearray()
        self.size = 0

    @property
    def count(self) -> int:
        return len(self.entries) // _RECORD.size


class PackWriter:
    """Collects records from many threads and cuts packs of about ``target_size`` bytes.

    ``add`` returns a :class:`FinishedPack` when the record completed one (the caller hands it to the
    uploader), else None. ``finish`` cuts the last, partial pack.

    With a ``pool`` (backup sessions), records are copied straight into a page-aligned buffer from the
    pool, which the store can write with direct I/O and which comes back for the next pack: one copy
    per record and no fresh 8 MiB allocation (page faults) per pack. Without one (GC), records are
    joined at the end.

    Encrypted repositories fill two packs at once and put each record into one of them at random
    (restic 0.18's answer to the chunk-size fingerprint, Sec #5291): a pack's size and record count
    (the footer's trailer length) are visible to whoever reads the store, and with one pack at a time
    a run of consecutive chunks of one file filled each pack, so pack sizes were sums of consecutive
    chunk sizes. Now no one can tell which records of a pack belong together or in what order. The
    two partial packs are merged at ``finish`` (two small packs would show two chunk sizes of a small
    file). Costs one more pack buffer per session; unencrypted repositories keep one lane (their
    trailers are readable anyway).
    """

    def __init__(self, sealer: Sealer, target_size: int, pool: BufferPool | None = None):
        self._sealer = sealer
        self.target_size = target_size
        self._pool = pool
        self._lock = threading.Lock()
        self._lanes = [_Lane() for _ in range(2 if sealer.encrypted else 1)]
        self._coins = self._coins_left = 0  # random bits from os.urandom, 64 at a time

    def _pick(self) -> _Lane:
        """A lane at random (a system-random bit per record: a syscall per record cost more than the
        copy of a 64 KiB one)."""
        if len(self._lanes) == 1:
            return self._lanes[0]
        if not self._coins_left:
            self._coins, self._coins_left = int.from_bytes(os.urandom(8), "little"), 64
        lane = self._lanes[self._coins & 1]
        self._coins >>= 1
        self._coins_left -= 1
        return lane

    def _room(self, lane: _Lane, need: int) -> None:
        """Make the lane's pooled buffer hold ``need`` bytes (a rare oversized pack grows it)."""
        if lane.buf is None:
            lane.buf = self._pool.take()
        if need > len(lane.buf):
            bigger = aligned_buffer(need + need // 2)
            bigger[:lane.size] = lane.buf[:lane.size]
            self._pool.give(lane.buf)
            lane.buf = bigger

    def _append(self, lane: _Lane, digest: bytes, parts: tuple, n: int) -> None:
        lane.entries += _RECORD.pack(digest, lane.size, n)
        if self._pool is None:  # (kept until the cut: views of a caller's buffer are copied)
            lane.records.extend(bytes(p) if isinstance(p, memoryview) else p for p in parts)
        else:
            self._room(lane, lane.size + n)
            at = lane.size
            for p in parts:
                lane.buf[at:at + len(p)] = p
                at += len(p)
        lane.size += n

    def add(self, digest: bytes, record) -> FinishedPack | None:
        """``record``: bytes, or a tuple of parts to be stored back to back (ChunkCodec.encode_parts)."""
        parts = record if isinstance(record, tuple) else (record,)
        n = sum(len(p) for p in parts)
        with self._lock:
            lane = self._pick()
            self._append(lane, digest, parts, n)
            if lane.size < self.target_size and lane.count < MAX_PACK_RECORDS:
                return None
            return self._cut(lane)

    def finish(self) -> FinishedPack | None:
        with self._lock:
            first = self._lanes[0]
            for other in self._lanes[1:]:
                self._merge(first, other)
            if not first.count:
                return None
            return self._cut(first)

    def _merge(self, into: _Lane, other: _Lane) -> None:
        """Move ``other``'s records to the end of ``into`` (and hand its buffer back)."""
        data = memoryview(other.buf) if other.buf is not None else b"".join(other.records)
        for digest, off, ln in _RECORD.iter_unpack(other.entries):
            self._append(into, digest, (data[off:off + ln],), ln)
        if other.buf is not None:
            self._pool.give(other.buf)
        other.__init__()

    def _cut(self, lane: _Lane) -> FinishedPack:
        """Seal the trailer and take the lane's pack (under the lock: a pooled buffer is filled in place)."""
        records, entries, size = lane.records, lane.entries, lane.size
        trailer = self._sealer.seal(b"".join(_ENTRY.pack(d, ln) for d, _off, ln in _RECORD.iter_unpack(entries)),
                                    TRAILER_PURPOSE)
        tail = trailer + _FOOTER.pack(len(trailer), PACK_MAGIC)
        if self._pool is None:
            lane.__init__()
            return FinishedPack(new_pack_id(), b"".join((*records, tail)), entries)
        self._room(lane, size + len(tail))
        buf = lane.buf
        buf[size:size + len(tail)] = tail
        lane.__init__()
        return FinishedPack(new_pack_id(), memoryview(buf)[:size + len(tail)], entries, buf, self._pool)


def read_trailer(sealer: Sealer, blob_tail: bytes, pack_size: int, what: str) -> list[PackEntry]:
    """Parse a pack's trailer from the last bytes of the pack (``blob_tail`` must hold the whole
    trailer and footer; see :func:`trailer_length`)."""
    if len(blob_tail) < _FOOTER.size:
        raise Damaged(f"{what}: too short")
    tlen, magic = _FOOTER.unpack(blob_tail[-_FOOTER.size:])
    if magic != PACK_MAGIC or tlen + _FOOTER.size > len(blob_tail):
        raise Damaged(f"{what}: bad footer")
    sealed = blob_tail[-_FOOTER.size - tlen:-_FOOTER.size]
    raw = sealer.unseal(sealed, TRAILER_PURPOSE, what)
    if len(raw) % _ENTRY.size:
        raise Damaged(f"{what}: bad trailer")
    entries = []
    off = 0
    for d, ln in _ENTRY.iter_unpack(raw):
        entries.append(PackEntry(d, off, ln))
        off += ln
    if off + tlen + _FOOTER.size != pack_size:
        raise Damaged(f"{what}: trailer does not match the pack size")
    return entries


def trailer_length(footer: bytes) -> int:
    """Bytes of trailer+footer at the end of a pack, from its last 12 bytes."""
    tlen, magic = _FOOTER.unpack(footer[-_FOOTER.size:])
    if magic != PACK_MAGIC:
        raise Damaged("pack: bad footer")
    return tlen + _FOOTER.size


FOOTER_SIZE = _FOOTER.size
