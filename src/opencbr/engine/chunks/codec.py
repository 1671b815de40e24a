"""Chunk records: how one chunk's plaintext becomes the bytes stored inside a pack, and back.

Record layout::

    flags (1 byte: bit0 = zstd-compressed)
    unencrypted:  body
    encrypted:    nonce (12) | AES-256-GCM(body) with associated data = flags | digest

Binding the digest into the GCM associated data means a record cannot be moved under another chunk's
name. On every decode the plaintext is hashed again and compared with the digest, so a flipped byte
raises :class:`Damaged` (in an unencrypted repository this hash check is the only guard).

A codec object holds per-thread-unsafe zstd contexts; give each worker thread its own
(:meth:`ChunkCodec.clone`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import blake3
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import Damaged
from .crypto import NONCE_SIZE, TAG_SIZE, RepoKeys

FLAG_ZSTD = 0x01
_FLAG_BYTES = (b"\x00", b"\x01")
ZSTD_LEVEL = 1  # level 3 saves <1% on the benchmark disk at 64 KiB chunks and costs 30% more CPU


@dataclass(frozen=True)
class Sealable:
    """A chunk in its stored form, opened from another vault's record (:meth:`ChunkCodec.open_body`):
    sealed again under other keys (:meth:`ChunkCodec.seal_into`) without being compressed again."""

    flags: int
    body: bytes

    def __len__(self) -> int:
        return len(self.body)


class ChunkCodec:
    def __init__(self, keys: RepoKeys | None, max_chunk: int = 16 << 20, level: int = ZSTD_LEVEL):
        self.keys = keys
        self.level = level
        self.max_chunk = max_chunk
        self._aes = AESGCM(keys.data_key) if keys else None
        self._id_key = keys.id_key if keys else None
        self._zc = zstandard.ZstdCompressor(level=level)
        self._zd = zstandard.ZstdDecompressor()

    def clone(self) -> "ChunkCodec":
        return ChunkCodec(self.keys, self.max_chunk, self.level)

    @property
    def encrypted(self) -> bool:
        return self._aes is not None

    def digest(self, data) -> bytes:
        """Chunk name: BLAKE3 of the plaintext, keyed with the id key when encrypted."""
        if self._id_key is not None:
            return blake3.blake3(data, key=self._id_key).digest()
        return blake3.blake3(data).digest()

    def encode(self, digest: bytes, data) -> bytes:
        """Plaintext -> record (compressed when that shrinks it, then encrypted)."""
        return b"".join(self.encode_parts(digest, data))

    def encode_parts(self, digest: bytes, data) -> tuple:
        """The record as consecutive parts (their concatenation is :meth:`encode`'s result), so the
        pack writer copies them straight into its buffer: no joined copy of every chunk. An
        incompressible ``data`` (a memoryview of the reader's buffer) goes into AES as it is."""
        flags, body = self.compress(data)
        fb = _FLAG_BYTES[flags]
        if self._aes is None:
            return (fb, body)
        nonce = os.urandom(NONCE_SIZE)
        return (fb, nonce, self._aes.encrypt(nonce, body, fb + digest))

    def open_body(self, digest: bytes, record, check: bool = False) -> tuple[int, bytes, bytes]:
        """Record -> ``(flags, stored body, plaintext)``: decrypted and decompressed, the body kept as
        stored (compressed) for :meth:`seal_into`. In an encrypted vault the record is authenticated
        (AES-GCM, the digest in its associated data) and the plaintext is not hashed again unless
        ``check`` (a record of an unverified pack: its writer held the key, chunks/unverified.py); in
        an unencrypted one the digest is the only guard and is checked. Raises Damaged."""
        record = memoryview(record)
        if len(record) < 1 or record[0] & ~FLAG_ZSTD:
            raise Damaged(f"chunk {digest.hex()}: bad record", digest=digest)
        flags, body = record[0], record[1:]
        if self._aes is not None:
            if len(body) < NONCE_SIZE + 16:
                raise Damaged(f"chunk {digest.hex()}: truncated record", digest=digest)
            try:
                body = self._aes.decrypt(body[:NONCE_SIZE], body[NONCE_SIZE:], _FLAG_BYTES[flags] + digest)
            except InvalidTag:
                raise Damaged(f"chunk {digest.hex()}: authentication failed", digest=digest) from None
        else:
            body = bytes(body)
        data = self._decompress(digest, body) if flags & FLAG_ZSTD else body
        if (check or self._aes is None) and self.digest(data) != digest:
            raise Damaged(f"chunk {digest.hex()}: digest mismatch", digest=digest)
        return flags, body, data

    def compress(self, data) -> tuple[int, object]:
        """``(flags, body)``: the zstd frame of ``data`` when that is smaller, else ``data``."""
        comp = self._zc.compress(data)
        return (FLAG_ZSTD, comp) if len(comp) < len(data) else (0, data)

    def record_size(self, body_size: int) -> int:
        """The size of the record of a :meth:`compress` body of ``body_size`` bytes."""
        return 1 + body_size + (NONCE_SIZE + TAG_SIZE if self._aes is not None else 0)

    def seal_into(self, digest: bytes, flags: int, body, out) -> int:
        """Write the record of a :meth:`compress` result at the start of ``out`` (a writable buffer of
        at least :meth:`record_size` bytes) and return its size: what :meth:`encode_parts` makes,
        encrypted straight into the caller's buffer (a message of many records is built without a
        copy of each)."""
        out = memoryview(out)
        fb = _FLAG_BYTES[flags]
        out[0] = flags
        if self._aes is None:
            out[1:1 + len(body)] = body
            return 1 + len(body)
        nonce = os.urandom(NONCE_SIZE)
        out[1:1 + NONCE_SIZE] = nonce
        end = 1 + NONCE_SIZE + len(body) + TAG_SIZE
        self._aes.encrypt_into(nonce, body, fb + digest, out[1 + NONCE_SIZE:end])
        return end

    def decode(self, digest: bytes, record) -> bytes:
        """Record -> plaintext, verified against ``digest`` (raises Damaged)."""
        data = self._open(digest, record, None, 0)
        return data if isinstance(data, bytes) else bytes(data)

    def decode_into(self, digest: bytes, record, scratch, at: int = 0, work=None):
        """:meth:`decode` without allocating where it can: the plaintext is written to ``scratch[at:]``
        (a writable buffer with room for the chunk) -- decrypted there, or decompressed there from
        ``work`` (a second such buffer, for the decrypted compressed body) -- and an unencrypted,
        uncompressed one is returned as a view of ``record``. Returns the verified plaintext: a view
        of ``scratch`` or ``record``, valid until they are reused (new bytes where a buffer is
        missing or too small).

        Why: a fresh output buffer per chunk costs its allocation, zero-filling and page faults, all
        while holding the GIL (measured on the 30k-file restore: 0.55 s of GIL in ``decrypt``). ``at``
        lets a caller place the plaintext where an ``O_DIRECT`` write can use it as it is."""
        return self._open(digest, record, scratch, at, work)

    def _decompress(self, digest: bytes, body) -> bytes:
        try:
            return self._zd.decompress(body, max_output_size=self.max_chunk)
        except zstandard.ZstdError as e:
            raise Damaged(f"chunk {digest.hex()}: bad compressed data ({e})", digest=digest) from None

    def _decompress_into(self, digest: bytes, body, scratch, at: int):
        """Decompress the zstd frame ``body`` into ``scratch[at:]`` when its header states a size
        that fits (our frames always do); None otherwise (the caller allocates)."""
        try:
            size = zstandard.frame_content_size(body)
        except zstandard.ZstdError as e:
            raise Damaged(f"chunk {digest.hex()}: bad compressed data ({e})", digest=digest) from None
        if size < 0 or size > self.max_chunk or at + size > len(scratch):
            return None
        out = memoryview(scratch)[at:at + size]
        got = 0
        try:
            with self._zd.stream_reader(body, read_across_frames=False) as r:
                while got < size:
                    n = r.readinto(out[got:])
                    if not n:
                        break
                    got += n
        except zstandard.ZstdError as e:
            raise Damaged(f"chunk {digest.hex()}: bad compressed data ({e})", digest=digest) from None
        if got != size:
            raise Damaged(f"chunk {digest.hex()}: compressed data shorter than stated", digest=digest)
        return out

    def _open(self, digest: bytes, record, scratch, at: int, work=None):
        record = memoryview(record)
        if len(record) < 1:
            raise Damaged(f"chunk {digest.hex()}: empty record", digest=digest)
        flags = record[0]
        if flags & ~FLAG_ZSTD:
            raise Damaged(f"chunk {digest.hex()}: unknown flags {flags:#x}", digest=digest)
        body = record[1:]
        if self._aes is not None:
            if len(body) < NONCE_SIZE + 16:
                raise Damaged(f"chunk {digest.hex()}: truncated record", digest=digest)
            aad = _FLAG_BYTES[flags] + digest
            try:  # memoryviews straight into the Rust AEAD: no copies of the ciphertext
                into = work if flags & FLAG_ZSTD else scratch  # (compressed: decompressed into scratch below)
                if into is None:
                    body = self._aes.decrypt(body[:NONCE_SIZE], body[NONCE_SIZE:], aad)
                else:
                    n = len(body) - NONCE_SIZE - 16
                    out = memoryview(into)[0 if into is work else at:][:n]
                    if len(out) == n:
                        self._aes.decrypt_into(body[:NONCE_SIZE], body[NONCE_SIZE:], aad, out)
                        body = out
                    else:  # bigger than the caller's buffer: allocate
                        body = self._aes.decrypt(body[:NONCE_SIZE], body[NONCE_SIZE:], aad)
            except InvalidTag:
                raise Damaged(f"chunk {digest.hex()}: authentication failed", digest=digest) from None
        if flags & FLAG_ZSTD:
            data = self._decompress_into(digest, body, scratch, at) if scratch is not None else None
            if data is None:
                data = self._decompress(digest, body)
        else:
            data = body
        if self.digest(data) != digest:
            raise Damaged(f"chunk {digest.hex()}: digest mismatch", digest=digest)
        return data
