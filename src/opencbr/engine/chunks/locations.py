"""Where each chunk lives: the in-memory :class:`ChunkIndex` and the index objects in the store.

An *index object* (``index/<time>-<rand>``) lists, per pack, the ``(digest, offset, length)`` of its
records. A backup writes one index object after its packs are durable and before its manifest; GC
writes one consolidated object and removes the ones it replaced. Index objects are zstd-compressed and
sealed (GCM or checksum), so a damaged one is detected, never half-trusted.

In memory a location is one Python int ``pack_no << 64 | offset << 32 | length`` (~130 bytes per chunk
with the dict entry and the 32-byte key, vs ~300 for a tuple), enough for ~10^6 chunks per GiB of RSS;
the per-pack record lists GC needs stay packed (40 bytes per record).
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import zstandard

from ..errors import Damaged
from .crypto import DIGEST_SIZE, Sealer

INDEX_MAGIC = b"OCBRIDX1"
INDEX_PURPOSE = b"opencbr-index"
_PACK_HDR = struct.Struct("<16sI")
_ENTRY = struct.Struct(f"<{DIGEST_SIZE}sII")
_MASK32 = 0xFFFFFFFF
ENTRY_SIZE = _ENTRY.size  # bytes of one packed record (digest first)


def new_index_name() -> str:
    # Time first so that a lexical sort is (roughly) oldest first: newer copies of a chunk win.
    return f"{time.time_ns():020d}-{os.urandom(4).hex()}"


@dataclass(frozen=True, slots=True)
class Location:
    pack_id: str
    offset: int
    length: int


class ChunkIndex:
    """digest -> location(s). Locations in ``excluded`` packs (condemned by GC) are kept only as
    fallbacks: :meth:`has` ignores them, so a writer never deduplicates against a chunk GC may sweep,
    while a reader can still use them."""

    def __init__(self, excluded: Iterable[str] = ()):
        self.pack_ids: list[str] = []
        self._pack_no: dict[str, int] = {}
        self._loc: dict[bytes, int] = {}
        self._alt: dict[bytes, list[int]] = {}
        self.excluded = set(excluded)
        # Per pack, its records packed as in the index object (40 bytes each, not ~150 for a tuple):
        # only GC walks them, everyone else looks chunks up in _loc.
        self._pack_blob: dict[str, bytes] = {}

    def _pno(self, pack_id: str) -> int:
        n = self._pack_no.get(pack_id)
        if n is None:
            n = self._pack_no[pack_id] = len(self.pack_ids)
            self.pack_ids.append(pack_id)
        return n

    def add_pack(self, pack_id: str, entries: bytes | Iterable[tuple[bytes, int, int]]) -> None:
        """Add all records of one pack, given packed (``pack_entries``) or as tuples (a pack seen twice,
        e.g. in an old and a consolidated index object, is added once)."""
        if pack_id in self._pack_blob:
            return
        blob = entries if isinstance(entries, (bytes, bytearray)) else pack_entries(entries)
        self._pack_blob[pack_id] = bytes(blob)
        pno = self._pno(pack_id)
        excluded = pack_id in self.excluded
        loc_map, alt = self._loc, self._alt
        for d, off, ln in _ENTRY.iter_unpack(blob):
            enc = (pno << 64) | (off << 32) | ln
            if excluded:
                alt.setdefault(d, []).append(enc)
                continue
            old = loc_map.get(d)
            if old is not None:
                alt.setdefault(d, []).append(old)
            loc_map[d] = enc

    def entries(self, pack_id: str) -> list[tuple[bytes, int, int]]:
        """The records ``(digest, offset, length)`` of one pack (empty if unknown)."""
        blob = self._pack_blob.get(pack_id)
        return [] if blob is None else list(_ENTRY.iter_unpack(blob))

    def has_pack(self, pack_id: str) -> bool:
        return pack_id in self._pack_blob

    def record_count(self, pack_id: str) -> int:
        return len(self._pack_blob.get(pack_id, b"")) // _ENTRY.size

    def has(self, digest: bytes) -> bool:
        return digest in self._loc

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._loc or digest in self._alt

    def __len__(self) -> int:
        return len(self._loc)

    def _decode(self, enc: int) -> Location:
        return Location(self.pack_ids[enc >> 64], (enc >> 32) & _MASK32, enc & _MASK32)

    def lookup(self, digest: bytes) -> Location | None:
        """Preferred location: the newest copy outside condemned packs, else any copy."""
        enc = self._loc.get(digest)
        if enc is None:
            alts = self._alt.get(digest)
            if not alts:
                return None
            enc = alts[-1]
        return self._decode(enc)

    def locations(self, digest: bytes) -> list[Location]:
        """Every known copy, preferred first (readers fall back to the others on damage)."""
        out = []
        enc = self._loc.get(digest)
        if enc is not None:
            out.append(self._decode(enc))
        for a in reversed(self._alt.get(digest, ())):
            out.append(self._decode(a))
        return out

    def stored_size(self, digest: bytes) -> int | None:
        loc = self.lookup(digest)
        return None if loc is None else loc.length

    def digests(self) -> Iterator[bytes]:
        yield from self._loc.keys()
        for d in self._alt.keys():
            if d not in self._loc:
                yield d


def unpack_entries(packed: bytes) -> Iterator[tuple[bytes, int, int]]:
    """``(digest, offset, length)`` of each record of :func:`pack_entries`'s output."""
    return _ENTRY.iter_unpack(packed)


def pack_entries(entries: Iterable[tuple[bytes, int, int]]) -> bytes:
    """Records ``(digest, offset, length)`` in the index object's binary form."""
    return b"".join(_ENTRY.pack(d, off, ln) for d, off, ln in entries)


def encode_index(sealer: Sealer, packs: Iterable[tuple[str, bytes | Iterable[tuple[bytes, int, int]]]]) -> bytes:
    parts = [INDEX_MAGIC]
    for pack_id, entries in packs:
        blob = entries if isinstance(entries, (bytes, bytearray)) else pack_entries(entries)
        parts.append(_PACK_HDR.pack(bytes.fromhex(pack_id), len(blob) // _ENTRY.size))
        parts.append(bytes(blob))
    raw = zstandard.ZstdCompressor(level=1).compress(b"".join(parts))
    return sealer.seal(raw, INDEX_PURPOSE)


def decode_index(sealer: Sealer, blob: bytes, what: str) -> list[tuple[str, bytes]]:
    """The packs of an index object, each with its records still packed (see :func:`pack_entries`)."""
    raw = sealer.unseal(blob, INDEX_PURPOSE, what)
    try:
        raw = zstandard.ZstdDecompressor().decompress(raw, max_output_size=1 << 34)
    except zstandard.ZstdError as e:
        raise Damaged(f"{what}: {e}") from None
    if raw[:8] != INDEX_MAGIC:
        raise Damaged(f"{what}: bad magic")
    out = []
    pos = 8
    mv = memoryview(raw)
    try:
        while pos < len(raw):
            pid, n = _PACK_HDR.unpack_from(mv, pos)
            pos += _PACK_HDR.size
            end = pos + n * _ENTRY.size
            if end > len(raw):
                raise Damaged(f"{what}: truncated")
            ents = bytes(mv[pos:end])
            pos = end
            out.append((pid.hex(), ents))
    except struct.error:
        raise Damaged(f"{what}: truncated") from None
    return out
