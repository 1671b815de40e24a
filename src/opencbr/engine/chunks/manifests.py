"""Manifests: the named, immutable root objects that make chunks reachable.

A manifest is ``manifests/<name>`` holding a JSON-able header, a *refs* section (concatenated 32-byte
chunk digests, in any order, duplicates and :data:`ZERO_DIGEST` markers allowed) and an opaque binary
payload. The chunk store only interprets ``refs`` (for GC, usage and verify); each index format puts
what it needs into header/payload: the disk :class:`FixedIndex` stores its per-block digests as the
refs themselves (block order), a file-tree index would store its catalog in the payload and its chunk
digests in refs. The object is zstd-compressed and sealed with the name as associated data, so a
manifest cannot be swapped for another.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, field
from typing import Iterator

import zstandard

from ..errors import Damaged, InvalidArgument
from .crypto import DIGEST_SIZE, ZERO_DIGEST, Sealer

MANIFESTS_DIR = "manifests/"
_MAGIC = b"OCBRMAN1"
_LENS = struct.Struct("<IQQ")
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

    def ref_set(self) -> set[bytes]:
        s = {self.refs[i:i + DIGEST_SIZE] for i in range(0, len(self.refs), DIGEST_SIZE)}
        s.discard(ZERO_DIGEST)
        return s


def _purpose(name: str) -> bytes:
    return b"opencbr-manifest:" + name.encode()


def encode_manifest(sealer: Sealer, m: Manifest) -> memoryview:
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
    what = f"manifest {name}"
    raw = sealer.unseal(blob, _purpose(name), what)
    try:
        raw = zstandard.ZstdDecompressor().decompress(raw, max_output_size=1 << 36)
    except zstandard.ZstdError as e:
        raise Damaged(f"{what}: {e}") from None
    if raw[:8] != _MAGIC or len(raw) < 8 + _LENS.size:
        raise Damaged(f"{what}: bad magic")
    hl, rl, pl = _LENS.unpack_from(raw, 8)
    p = 8 + _LENS.size
    if p + hl + rl + pl != len(raw):
        raise Damaged(f"{what}: bad lengths")
    header = json.loads(raw[p:p + hl])
    refs = raw[p + hl:p + hl + rl]
    payload = raw[p + hl + rl:]
    return Manifest(name, header, refs, payload, len(blob))


def stream_refs(sealer: Sealer, name: str, blob: bytes, piece: int = 1 << 20) -> tuple[dict, Iterator[bytes]]:
    """A manifest's header and its refs a piece at a time (decompressed as read, not whole: a large
    disk's refs are its biggest object). The blob must still be unsealed whole (one AES-GCM tag)."""
    what = f"manifest {name}"
    reader = zstandard.ZstdDecompressor().stream_reader(sealer.unseal(blob, _purpose(name), what))
    try:
        head = reader.read(8 + _LENS.size)
        if head[:8] != _MAGIC or len(head) < 8 + _LENS.size:
            raise Damaged(f"{what}: bad magic")
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
