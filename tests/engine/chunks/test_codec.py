"""Chunk records and sealed blobs: round trips, and every kind of damage is detected."""

from __future__ import annotations

import os

import pytest

from opencbr.engine.chunks.codec import ChunkCodec
from opencbr.engine.chunks.crypto import RepoKeys, Sealer
from opencbr.engine.errors import Damaged, InvalidArgument


@pytest.mark.parametrize("encrypted", [True, False])
@pytest.mark.parametrize("data", [b"a" * 65536, os.urandom(65536), b"x"])
def test_roundtrip(encrypted, data):
    codec = ChunkCodec(RepoKeys.generate() if encrypted else None)
    d = codec.digest(data)
    rec = codec.encode(d, data)
    assert codec.decode(d, rec) == data
    if data == b"a" * 65536:
        assert len(rec) < 1000  # compressed
    if len(data) == 65536 and data != b"a" * 65536:
        assert len(rec) <= 1 + len(data) + (28 if encrypted else 0)  # stored raw when zstd does not shrink


@pytest.mark.parametrize("encrypted", [True, False])
@pytest.mark.parametrize("data", [b"a" * 65536, os.urandom(65536), b"x"])
def test_a_record_sealed_into_a_buffer_is_the_one_encode_makes(encrypted, data):
    codec = ChunkCodec(RepoKeys.generate() if encrypted else None)
    d = codec.digest(data)
    flags, body = codec.compress(data)
    size = codec.record_size(len(body))
    buf = bytearray(b"#" * (size + 3))
    assert codec.seal_into(d, flags, body, memoryview(buf)[2:]) == size
    assert buf[:2] == b"##" and buf[-1:] == b"#"  # nothing written outside the record
    assert codec.decode(d, buf[2:2 + size]) == data
    assert size == len(codec.encode(d, data))


@pytest.mark.parametrize("encrypted", [True, False])
def test_every_flipped_byte_is_detected(encrypted):
    codec = ChunkCodec(RepoKeys.generate() if encrypted else None)
    data = (b"some text that compresses " * 300)[:4096]
    d = codec.digest(data)
    rec = bytearray(codec.encode(d, data))
    for i in range(0, len(rec), max(1, len(rec) // 64)):
        bad = bytearray(rec)
        bad[i] ^= 0x01
        with pytest.raises(Damaged):
            codec.decode(d, bytes(bad))
    with pytest.raises(Damaged):
        codec.decode(bytes(32), bytes(rec))  # record under another name


@pytest.mark.parametrize("encrypted", [True, False])
@pytest.mark.parametrize("data", [b"a" * 65536, os.urandom(65536), b"x"])
def test_decode_into_places_the_plaintext_and_checks_it(encrypted, data):
    """decode_into gives what decode gives; encrypted plaintext lands in the caller's buffer at ``at``
    (uncompressed chunks are then views of it), a damaged record is refused, and a buffer too small
    for the chunk falls back to a fresh allocation."""
    codec = ChunkCodec(RepoKeys.generate() if encrypted else None)
    d = codec.digest(data)
    rec = codec.encode(d, data)
    scratch = bytearray(len(data) + 100)
    work = bytearray(len(data) + 100)
    got = codec.decode_into(d, rec, scratch, 37, work)
    assert bytes(got) == data
    compressed = data == b"a" * 65536
    if encrypted or compressed:  # decrypted or decompressed into place
        assert bytes(scratch[37:37 + len(data)]) == data
        assert isinstance(got, memoryview) and got.obj is scratch
    assert bytes(codec.decode_into(d, rec, bytearray(3), 0, bytearray(3))) == data  # too small: allocates
    assert bytes(codec.decode_into(d, rec, scratch, 5)) == data  # no work buffer: allocates for it
    bad = bytearray(rec)
    bad[-1] ^= 0x01
    with pytest.raises(Damaged):
        codec.decode_into(d, bytes(bad), scratch, 0)
    with pytest.raises(Damaged):
        codec.decode_into(bytes(32), rec, scratch, 0)


def test_keyed_names_differ_from_plain_blake3():
    data = b"hello world" * 100
    keyed = ChunkCodec(RepoKeys.generate())
    plain = ChunkCodec(None)
    assert keyed.digest(data) != plain.digest(data)
    assert ChunkCodec(RepoKeys.generate()).digest(data) != keyed.digest(data)


@pytest.mark.parametrize("encrypted", [True, False])
def test_sealer_detects_damage_and_wrong_purpose(encrypted):
    s = Sealer(RepoKeys.generate() if encrypted else None)
    blob = s.seal(b"payload" * 10, b"p1")
    assert s.unseal(blob, b"p1", "x") == b"payload" * 10
    with pytest.raises(Damaged):
        s.unseal(blob, b"p2", "x")
    bad = bytearray(blob)
    bad[3] ^= 0x80
    with pytest.raises(Damaged):
        s.unseal(bytes(bad), b"p1", "x")


def test_key_wrap_needs_the_right_master_key():
    keys = RepoKeys.generate()
    mk = os.urandom(32)
    w = keys.wrap(mk, "repo1")
    assert RepoKeys.unwrap(w, mk, "repo1") == keys
    with pytest.raises(InvalidArgument):
        RepoKeys.unwrap(w, os.urandom(32), "repo1")
    with pytest.raises(InvalidArgument):
        RepoKeys.unwrap(w, mk, "repo2")
    with pytest.raises(InvalidArgument):
        keys.wrap(b"short", "r")
