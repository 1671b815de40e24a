"""Manifests: the named, immutable root objects that make chunks reachable.

A manifest is ``manifests/<name>`` holding a JSON-able header, a *refs* section (concatenated 32-byte
chunk digests, in any order, duplicates and :data:`ZERO_DIGEST` markers allowed) and an opaque binary
payload. The chunk store only interprets ``refs`` (for GC, usage and verify); each index format puts
what it needs into header/payload: the disk :class:`FixedIndex` stores its per-block digests as the
refs themselves (block order), a file-tree index would store its catalog in the payload and its chunk
digests in refs. The object is zstd-compressed and sealed with the name as associated data, so a
manifest cannot be swapped for another.

Refs longer than a segment (the chunk store's ``refs_segment_size``, 2 MiB: 4 GiB of a disk at 64 KiB
blocks) are not inline but in *segment objects* ``refs/<name>/<nonce>-<number>`` (format 2, magic
``OCBRMAN2``): each a piece of the refs, compressed and sealed with the manifest's name, a random nonce
per write and its number as associated data, so a segment cannot stand in for another one or for
another manifest's. The manifest lists every segment's refs length, stored length and BLAKE3 digest
(a truncated, swapped or stale segment is damage naming it). Segments are written before their
manifest, so readers stream a large disk's refs one segment at a time and a writer never holds them
whole; a crash before the manifest leaves orphan segments that GC removes (gc.py). Manifests with
inline refs (format 1, every manifest written before segments) read as before.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from typing import Callable, Iterator

import blake3
import zstandard

from ..errors import Damaged, InvalidArgument
from .crypto import DIGEST_SIZE, ZERO_DIGEST, Sealer

MANIFESTS_DIR = "manifests/"
REFS_DIR = "refs/"
_MAGIC = b"OCBRMAN1"
_MAGIC2 = b"OCBRMAN2"  # refs in segment objects
_LENS = struct.Struct("<IQQ")
_SEGMENTS = struct.Struct("<I8s")  # segment count, nonce of the write
_SEGMENT = struct.Struct("<IQ32s")  # refs bytes, stored bytes, BLAKE3 of the stored object
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidArgument(f"invalid manifest/backup id {name!r} (1-128 of A-Z a-z 0-9 . _ -)")
    return name


@dataclass
class Manifest:
    name: str
    header: dict
    refs: bytes = b""
    payload: bytes = b""
    stored_size: int = field(default=0)
    segments: list["RefsSegment"] = field(default_factory=list)  # (format 2; refs then filled from them)

    def ref_set(self) -> set[bytes]:
        s = {self.refs[i:i + DIGEST_SIZE] for i in range(0, len(self.refs), DIGEST_SIZE)}
        s.discard(ZERO_DIGEST)
        return s


@dataclass(frozen=True)
class RefsSegment:
    """One segment object of a manifest's refs, as the manifest lists it."""

    name: str  # the manifest's
    nonce: bytes  # of the write that stored the manifest (8 bytes)
    number: int
    refs_length: int
    stored_length: int
    digest: bytes  # BLAKE3 of the stored object

    @property
    def rel(self) -> str:
        return refs_segment_rel(self.name, self.nonce, self.number)

    @property
    def what(self) -> str:
        return f"manifest {self.name}: refs segment {self.number} ({self.rel})"


def refs_segment_rel(name: str, nonce: bytes, number: int) -> str:
    return f"{refs_prefix(name)}{nonce.hex()}-{number:06d}"


def refs_prefix(name: str) -> str:
    """Where a manifest's segment objects are (relative to the repository prefix)."""
    return f"{REFS_DIR}{name}/"


def _purpose(name: str) -> bytes:
    return b"opencbr-manifest:" + name.encode()


def _segment_purpose(name: str, nonce: bytes, number: int) -> bytes:
    return b"opencbr-manifest-refs:" + name.encode() + b":" + nonce.hex().encode() + b":" + str(number).encode()


def encode_refs_segment(sealer: Sealer, name: str, nonce: bytes, number: int, refs) -> tuple[bytes, RefsSegment]:
    """The stored object of one segment of ``name``'s refs, and its entry in the manifest."""
    if len(refs) % DIGEST_SIZE:
        raise InvalidArgument("manifest refs must be whole 32-byte digests")
    blob = sealer.seal(zstandard.ZstdCompressor(level=3).compress(refs), _segment_purpose(name, nonce, number))
    return blob, RefsSegment(name, nonce, number, len(refs), len(blob), blake3.blake3(blob).digest())


def decode_refs_segment(sealer: Sealer, seg: RefsSegment, blob: bytes) -> bytes:
    """The refs of one segment, checked against the manifest's entry (Damaged naming the segment)."""
    if len(blob) != seg.stored_length:
        raise Damaged(f"{seg.what}: {len(blob)} bytes stored, the manifest lists {seg.stored_length}")
    if blake3.blake3(blob).digest() != seg.digest:
        raise Damaged(f"{seg.what}: not the segment the manifest lists (digest mismatch)")
    raw = sealer.unseal(blob, _segment_purpose(seg.name, seg.nonce, seg.number), seg.what)
    try:
        refs = zstandard.ZstdDecompressor().decompress(raw, max_output_size=max(seg.refs_length, 1))
    except zstandard.ZstdError as e:
        raise Damaged(f"{seg.what}: {e}") from None
    if len(refs) != seg.refs_length:
        raise Damaged(f"{seg.what}: {len(refs)} bytes of refs, the manifest lists {seg.refs_length}")
    return refs


def encode_manifest(sealer: Sealer, m: Manifest) -> memoryview:
    """The stored manifest: refs inline (format 1), or the table of ``m.segments`` (format 2, the
    refs already stored in them: ``m.refs`` is then ignored)."""
    if m.segments:
        return _encode_segmented(sealer, m)
    if len(m.refs) % DIGEST_SIZE:
        raise InvalidArgument("manifest refs must be whole 32-byte digests")
    hdr = json.dumps(m.header, separators=(",", ":"), sort_keys=True).encode()
    # compressed piece by piece straight into the buffer it is then sealed in (one copy of the refs, not
    # five): the refs of a large disk are the biggest object a backup holds (32 bytes per block)
    head = _MAGIC + _LENS.pack(len(hdr), len(m.refs), len(m.payload)) + hdr
    size = len(head) + len(m.refs) + len(m.payload)  # in the frame header, as one-shot compress puts it
    out = _BufferWriter(sealer.seal_head, size + (size >> 7) + (64 << 10) + 16)  # > zstd's worst case
    with zstandard.ZstdCompressor(level=3).stream_writer(out, size=size, closefd=False) as z:
        z.write(head)
        for part in m.refs.pieces() if hasattr(m.refs, "pieces") else (m.refs,):  # (SpooledDigests)
            z.write(part)
        z.write(m.payload)
    return sealer.seal_in_place(out.buf, out.pos - sealer.seal_head, _purpose(m.name))


def _encode_segmented(sealer: Sealer, m: Manifest) -> bytes:
    hdr = json.dumps(m.header, separators=(",", ":"), sort_keys=True).encode()
    segs = m.segments
    table = b"".join(_SEGMENT.pack(s.refs_length, s.stored_length, s.digest) for s in segs)
    raw = (_MAGIC2 + _LENS.pack(len(hdr), sum(s.refs_length for s in segs), len(m.payload))
           + _SEGMENTS.pack(len(segs), segs[0].nonce) + hdr + table + m.payload)
    return sealer.seal(zstandard.ZstdCompressor(level=3).compress(raw), _purpose(m.name))


def _read_segment_table(name: str, raw, at: int, hl: int, rl: int) -> tuple[int, list[RefsSegment]]:
    """Parse a format 2 manifest's segment table after its header; returns (end of table, segments)."""
    count, nonce = _SEGMENTS.unpack_from(raw, 8 + _LENS.size)
    segs, p = [], at + hl
    for i in range(count):
        refs_len, stored, digest = _SEGMENT.unpack_from(raw, p + i * _SEGMENT.size)
        segs.append(RefsSegment(name, nonce, i, refs_len, stored, digest))
    if sum(s.refs_length for s in segs) != rl:
        raise Damaged(f"manifest {name}: its refs segments do not add up to its refs length")
    return p + count * _SEGMENT.size, segs


class _BufferWriter:
    """A file-like sink filling a preallocated buffer from ``start``."""

    def __init__(self, start: int, capacity: int):
        self.buf, self.pos = bytearray(capacity), start

    def write(self, data) -> int:
        end = self.pos + len(data)
        if end > len(self.buf):
            self.buf.extend(bytes(end - len(self.buf) + (1 << 20)))  # (never for a valid bound)
        self.buf[self.pos:end] = data
        self.pos = end
        return len(data)

    def flush(self) -> None:
        pass


def decode_manifest(sealer: Sealer, name: str, blob: bytes) -> Manifest:
    """The manifest in ``blob``; for format 2 with ``refs`` empty and ``segments`` listing them."""
    what = f"manifest {name}"
    raw = sealer.unseal(blob, _purpose(name), what)
    try:
        raw = zstandard.ZstdDecompressor().decompress(raw, max_output_size=1 << 36)
    except zstandard.ZstdError as e:
        raise Damaged(f"{what}: {e}") from None
    if raw[:8] not in (_MAGIC, _MAGIC2) or len(raw) < 8 + _LENS.size:
        raise Damaged(f"{what}: bad magic")
    hl, rl, pl = _LENS.unpack_from(raw, 8)
    p = 8 + _LENS.size
    if raw[:8] == _MAGIC2:
        try:
            end, segs = _read_segment_table(name, raw, p + _SEGMENTS.size, hl, rl)
        except struct.error:
            raise Damaged(f"{what}: bad lengths") from None
        if end + pl != len(raw):
            raise Damaged(f"{what}: bad lengths")
        header = json.loads(raw[p + _SEGMENTS.size:p + _SEGMENTS.size + hl])
        return Manifest(name, header, b"", raw[end:], len(blob), segs)
    if p + hl + rl + pl != len(raw):
        raise Damaged(f"{what}: bad lengths")
    header = json.loads(raw[p:p + hl])
    refs = raw[p + hl:p + hl + rl]
    payload = raw[p + hl + rl:]
    return Manifest(name, header, refs, payload, len(blob))


def stream_refs(sealer: Sealer, name: str, blob: bytes, read_segment: Callable[[RefsSegment], bytes],
                piece: int = 1 << 20) -> tuple[dict, Iterator[bytes]]:
    """A manifest's header and its refs a piece at a time (decompressed as read, not whole: a large
    disk's refs are its biggest object): of format 2, one segment at a time (``read_segment`` returns
    a segment's refs, checked); of format 1, from the blob, which is still unsealed whole."""
    what = f"manifest {name}"
    reader = zstandard.ZstdDecompressor().stream_reader(sealer.unseal(blob, _purpose(name), what))
    try:
        head = reader.read(8 + _LENS.size)
        if head[:8] not in (_MAGIC, _MAGIC2) or len(head) < 8 + _LENS.size:
            raise Damaged(f"{what}: bad magic")
        if head[:8] == _MAGIC2:
            m = decode_manifest(sealer, name, blob)  # (small: a header and a table)
            return m.header, _segment_pieces(m.segments, read_segment, piece)
        hl, rl, _pl = _LENS.unpack_from(head, 8)
        header = json.loads(reader.read(hl))
    except zstandard.ZstdError as e:
        raise Damaged(f"{what}: {e}") from None

    def pieces() -> Iterator[bytes]:
        left = rl
        while left:
            try:
                data = reader.read(min(piece, left))
            except zstandard.ZstdError as e:
                raise Damaged(f"{what}: {e}") from None
            if not data:
                raise Damaged(f"{what}: truncated")
            left -= len(data)
            yield data

    return header, pieces()


def _segment_pieces(segs: list[RefsSegment], read_segment: Callable[[RefsSegment], bytes],
                    piece: int) -> Iterator[bytes]:
    for seg in segs:  # one segment in memory at a time
        refs = memoryview(read_segment(seg))
        for at in range(0, len(refs), piece):
            yield bytes(refs[at:at + piece])


def split_refs(refs, size: int) -> Iterator[memoryview]:
    """``refs`` (bytes, or an object with ``pieces()`` such as the disk's spooled digests) in pieces of
    ``size`` bytes (the last shorter), holding one piece at a time: each piece is valid until the next
    is asked for (one buffer, refilled)."""
    if not hasattr(refs, "pieces"):
        yield from (memoryview(refs)[at:at + size] for at in range(0, len(refs), size))
        return
    buf, fill = bytearray(size), 0
    for part in refs.pieces():
        part = memoryview(part)
        while part:
            n = min(size - fill, len(part))
            buf[fill:fill + n], part, fill = part[:n], part[n:], fill + n
            if fill == size:
                yield memoryview(buf)
                fill = 0
    if fill:
        yield memoryview(buf)[:fill]
