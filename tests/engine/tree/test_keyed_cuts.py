"""Keyed content-defined chunking (issue 11 item 20): an encrypted vault cuts files, small-file bundles
and catalog chunks where only its key tells, so a reader of the object store cannot fingerprint a known
file by its chunk sizes; an unencrypted vault keeps the public cuts; dedup inside a vault is kept."""

from __future__ import annotations

import math
import os
import random
import struct
import zlib

import pytest
import zstandard
from pyfastcdc import FastCDC
from pyfastcdc.py.constants import GEAR, MASKS

from opencbr.engine.chunks.crypto import NONCE_SIZE, TAG_SIZE, RepoKeys
from opencbr.engine.tree import backup as backup_mod
from opencbr.engine.tree import backup_tree, restore_tree, verify_tree
from opencbr.engine.tree.bundle import BUNDLE_MAX, BUNDLE_MIN, Bundler
from opencbr.engine.tree.bundle import CUT_MODULUS as BUNDLE_MODULUS
from opencbr.engine.tree.catalog import CUT_MODULUS as CATALOG_MODULUS
from opencbr.engine.tree.catalog import MIN_CHUNK as CATALOG_MIN
from opencbr.engine.tree.catalog import CatalogReader, CatalogWriter
from opencbr.engine.tree.chunker import DEFAULT_PARAMS, ChunkParams, _gear_tables, _keyed_fastcdc
from opencbr.engine.tree.common import load_index
from opencbr.engine.tree.cutting import CUT_KEYED, CUT_PUBLIC, ChunkingSecret, chunking_secret
from tests.support.engine_tree import new_repo

TINY = ChunkParams(avg=256, min=64, max=1024)
_U64 = (1 << 64) - 1


# -- the keyed gear table really is the table pyfastcdc cuts with ----------------------------------------
def _reference_cuts(data: bytes, gear, p: ChunkParams) -> list[int]:
    """Chunk lengths of FastCDC 2020 (normalization level 1) with gear table ``gear``, in plain Python
    (the algorithm pyfastcdc ports from fastcdc-rs), to check what the C loop does with our table."""
    bits = round(math.log2(p.avg))
    mask_s, mask_l = MASKS[bits + 1], MASKS[bits - 1]
    out, pos = [], 0
    while pos < len(data):
        rem = len(data) - pos
        if rem <= p.min:
            out.append(rem)
            break
        center, end = p.avg, min(rem, p.max)
        if rem < center:
            center = rem
        h, cut = 0, end
        for i in range(p.min, end):
            h = ((h << 1) + gear[data[pos + i]]) & _U64
            if h & (mask_s if i < center else mask_l) == 0:
                cut = i
                break
        out.append(cut)
        pos += cut
    return out


def _cut_lengths(cdc: FastCDC, data: bytes) -> list[int]:
    return [c.length for c in cdc.cut_buf(data)]


def test_keyed_gear_table_is_what_the_c_loop_cuts_with():
    data = random.Random(5).randbytes(200_000)
    public = FastCDC(TINY.avg, min_size=TINY.min, max_size=TINY.max)
    assert _cut_lengths(public, data) == _reference_cuts(data, GEAR, TINY)  # (the reference is right)
    secret = ChunkingSecret.derive(RepoKeys.generate())
    keyed = _keyed_fastcdc(TINY, secret.gear)
    got = _cut_lengths(keyed, data)
    assert got == _reference_cuts(data, secret.gear, TINY)
    assert got != _cut_lengths(public, data)
    # a second instance with the same key cuts the same way (per-thread chunkers agree)
    assert _cut_lengths(_keyed_fastcdc(TINY, secret.gear), data) == got


def test_layout_check_refuses_an_object_it_does_not_recognise():
    unseeded = FastCDC(TINY.avg, min_size=TINY.min, max_size=TINY.max)  # uses the shared public table
    assert _gear_tables(unseeded, TINY) is None
    seeded = FastCDC(TINY.avg, min_size=TINY.min, max_size=TINY.max, seed=1)
    assert _gear_tables(seeded, TINY) is not None
    assert _gear_tables(seeded, ChunkParams(avg=512, min=64, max=1024)) is None  # not the object we think


def test_secret_is_derived_per_vault_and_stable():
    keys = RepoKeys.generate()
    a, b = ChunkingSecret.derive(keys), ChunkingSecret.derive(keys)
    assert a == b and len(a.gear) == 256 and len(a.cut_table) == 1 << 16
    other = ChunkingSecret.derive(RepoKeys.generate())
    assert other.gear != a.gear and other.cut_table != a.cut_table
    # domain separation: neither table is the data key, the id key or each other's bytes
    raw_gear = struct.pack("<256Q", *a.gear)
    assert keys.data_key not in raw_gear and keys.id_key not in raw_gear and raw_gear[:64] not in a.cut_table
    assert chunking_secret(None) is None


# -- bundles and catalog chunks ---------------------------------------------------------------------
def _bundle_starts(secret, files: list[bytes]) -> list[int]:
    b, starts = Bundler(secret), [0]
    for i, f in enumerate(files):
        _off, cut = b.add(f)
        if cut:
            b.take()
            starts.append(i + 1)
    return starts


def test_bundle_cuts_are_keyed_in_encrypted_vaults_only():
    r = random.Random(3)
    files = [r.randbytes(r.randrange(1000, 20000)) for _ in range(600)]
    public = _bundle_starts(None, files)
    # the public rule, as before: from BUNDLE_MIN bytes on, after a file whose CRC-32 is 0 mod CUT_MODULUS
    size, expected = 0, [0]
    for i, f in enumerate(files):
        size += len(f)
        if size >= BUNDLE_MAX or (size >= BUNDLE_MIN and zlib.crc32(f) % BUNDLE_MODULUS == 0):
            expected.append(i + 1)
            size = 0
    assert public == expected and len(public) > 5
    k1, k2 = (ChunkingSecret.derive(RepoKeys.generate()) for _ in range(2))
    assert _bundle_starts(k1, files) != public and _bundle_starts(k1, files) != _bundle_starts(k2, files)
    assert _bundle_starts(k1, files) == _bundle_starts(k1, files)


def _catalog_cuts(secret, paths: list[bytes]) -> list[int]:
    w = CatalogWriter(lambda data: zlib.crc32(data).to_bytes(32, "little"), secret)
    for p in paths:
        w.add(b"r" * 150, p)
    return [c.entries for c in w.finish()]


def test_catalog_cuts_are_keyed_in_encrypted_vaults_only():
    paths = [b"dir/file-%06d" % i for i in range(20000)]
    public = _catalog_cuts(None, paths)
    # the public rule, as before: after MIN_CHUNK bytes, at a path whose CRC-32 is 0 mod CUT_MODULUS
    first_cut = next(i for i, p in enumerate(paths) if (i + 1) * 150 >= CATALOG_MIN
                     and zlib.crc32(p) % CATALOG_MODULUS == 0)
    assert public[0] == first_cut + 1
    k1, k2 = (ChunkingSecret.derive(RepoKeys.generate()) for _ in range(2))
    assert _catalog_cuts(k1, paths) != public and _catalog_cuts(k1, paths) != _catalog_cuts(k2, paths)


# -- whole backups ----------------------------------------------------------------------------------
def _file_chunks(repo, backup_id: str, name: bytes) -> list[tuple[bytes, int, int]]:
    cs = repo.chunks
    for e in CatalogReader(cs, load_index(cs, backup_id)).entries():
        if e.path == name:
            return e.chunks
    raise AssertionError(f"{name!r} not in {backup_id}")


def _public_lengths(data: bytes) -> list[int]:
    return _cut_lengths(FastCDC(DEFAULT_PARAMS.avg, min_size=DEFAULT_PARAMS.min, max_size=DEFAULT_PARAMS.max), data)


@pytest.fixture(scope="module")
def big_file_data() -> bytes:
    return random.Random(11).randbytes(14 << 20)  # incompressible: records are plaintext + 29 bytes


def test_two_encrypted_vaults_cut_one_file_differently_and_each_dedups(tmp_path, big_file_data):
    src = tmp_path / "src"
    src.mkdir()
    (src / "known.iso").write_bytes(big_file_data)
    lengths = []
    for name in ("a", "b"):
        repo = new_repo(tmp_path, True, name)
        backup_tree(repo, src, backup_id="b1", meta={})
        assert repo.read_manifest("b1")["chunking"]["cut"] == CUT_KEYED
        lengths.append([n for _d, n, _o in _file_chunks(repo, "b1", b"known.iso")])
        assert sum(lengths[-1]) == len(big_file_data)
        # the same file again in the same vault (full re-read, and a copy under another name) adds only
        # catalog chunks: the keyed cuts are stable within the vault
        (src / "copy.iso").write_bytes(big_file_data)
        res = backup_tree(repo, src, backup_id="b2", meta={}, full=True)
        assert res.bytes_read == 2 * len(big_file_data) and res.added_bytes < 64 << 10
        assert [n for _d, n, _o in _file_chunks(repo, "b2", b"copy.iso")] == lengths[-1]
        out = tmp_path / f"out-{name}"
        restore_tree(repo, "b2", out)  # a round trip through the keyed chunker
        assert (out / "known.iso").read_bytes() == big_file_data == (out / "copy.iso").read_bytes()
        assert verify_tree(repo, "b2").ok
        (src / "copy.iso").unlink()
    assert lengths[0] != lengths[1]
    assert _public_lengths(big_file_data) not in lengths


def test_unencrypted_vault_keeps_the_public_cuts(tmp_path, big_file_data):
    src = tmp_path / "src"
    src.mkdir()
    (src / "known.iso").write_bytes(big_file_data)
    repo = new_repo(tmp_path, False)
    backup_tree(repo, src, backup_id="b1", meta={})
    assert repo.read_manifest("b1")["chunking"]["cut"] == CUT_PUBLIC
    assert [n for _d, n, _o in _file_chunks(repo, "b1", b"known.iso")] == _public_lengths(big_file_data)


def test_an_old_vault_cut_with_public_parameters_keeps_working(tmp_path, big_file_data, monkeypatch):
    """A backup made before keyed cutting (simulated: the public cutting in an encrypted vault) still
    restores; the next backup cuts a changed file the keyed way (stored once more), reuses an unchanged
    one as recorded, and both restore exactly."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "changed.bin").write_bytes(big_file_data[: 6 << 20])
    (src / "same.bin").write_bytes(big_file_data[6 << 20:])
    repo = new_repo(tmp_path, True)
    with monkeypatch.context() as m:
        m.setattr(backup_mod, "chunking_secret", lambda keys: None)
        backup_tree(repo, src, backup_id="old", meta={})
    assert repo.read_manifest("old")["chunking"]["cut"] == CUT_PUBLIC
    old_same = _file_chunks(repo, "old", b"same.bin")
    with open(src / "changed.bin", "r+b") as f:
        f.seek(3 << 20)
        f.write(b"changed!" * 512)
    res = backup_tree(repo, src, backup_id="new", meta={}, parent_backup_id="old")
    assert repo.read_manifest("new")["chunking"]["cut"] == CUT_KEYED
    assert _file_chunks(repo, "new", b"same.bin") == old_same and res.reused_files == 1
    assert res.added_bytes > (5 << 20)  # the changed file is stored again under the new cuts (once)
    for bid in ("old", "new"):
        out = tmp_path / f"out-{bid}"
        restore_tree(repo, bid, out)
        assert (out / "same.bin").read_bytes() == big_file_data[6 << 20:]
    assert (tmp_path / "out-new" / "changed.bin").read_bytes() == (src / "changed.bin").read_bytes()
    assert (tmp_path / "out-old" / "changed.bin").read_bytes() == big_file_data[: 6 << 20]


# -- what a reader of the object store sees -----------------------------------------------------------
def _objects(repo) -> dict[str, bytes]:
    return {k: repo.store.get(k) for k, _size in repo.store.list(repo.prefix)}


def _record_overhead(encrypted: bool) -> int:
    return 1 + (NONCE_SIZE + TAG_SIZE if encrypted else 0)  # flags byte (+ nonce and GCM tag)


def _trailer_overhead(encrypted: bool, records: int) -> int:
    """Trailer + footer bytes of a pack of ``records`` records (see packs.py)."""
    return (NONCE_SIZE + TAG_SIZE if encrypted else 16) + 36 * records + 12


def _packs_explained_by(repo, lengths: list[int], encrypted: bool) -> int:
    """How many pack objects have exactly the size that a run of consecutive chunks of ``lengths``
    would give: the attacker's test for "this known file is in the vault" from object sizes alone."""
    rec = [n + _record_overhead(encrypted) for n in lengths]
    sums = set()
    for i in range(len(rec)):
        s = 0
        for j in range(i, len(rec)):
            s += rec[j]
            sums.add(s + _trailer_overhead(encrypted, j - i + 1))
    return sum(1 for k, size in repo.store.list(repo.prefix + "data/") if size in sums)


def test_pack_sizes_do_not_fingerprint_a_known_file(tmp_path, big_file_data):
    """The fingerprint itself: an attacker chunks a file they know with the public parameters and
    looks for packs whose sizes are sums of its predicted records. Without keyed cuts (the unencrypted
    vault here, and every encrypted vault before) most packs match; with them, none does."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "known.iso").write_bytes(big_file_data)
    predicted = _public_lengths(big_file_data)
    for encrypted, name in ((False, "plain"), (True, "enc")):
        repo = new_repo(tmp_path, encrypted, name)
        backup_tree(repo, src, backup_id="b1", meta={})
        packs = sum(1 for _ in repo.store.list(repo.prefix + "data/"))
        hits = _packs_explained_by(repo, predicted, encrypted)
        if encrypted:
            assert hits <= 1, f"{hits} of {packs} packs match the public chunking of the known file"
        else:
            assert hits >= packs - 1 >= 3  # (the control: the test does see the fingerprint)


def _encodings(lengths: list[int]) -> list[tuple[bytes, bytes, int]]:
    """Ways the engine writes integers (u32 and u64 little-endian in binary formats, decimal in JSON):
    ``(first, second, window)`` -- a hit is ``second`` within ``window`` bytes after ``first``."""
    out = []
    for a, b in zip(lengths, lengths[1:], strict=False):
        out.append((struct.pack("<I", a), struct.pack("<I", b), 64))
        out.append((struct.pack("<Q", a), struct.pack("<Q", b), 64))
        out.append((str(a).encode(), str(b).encode(), 16))
    return out


def _table_hits(blob: bytes, lengths: list[int]) -> int:
    hits = 0
    for first, second, window in _encodings(lengths):
        at = blob.find(first)
        while at >= 0:
            if blob.find(second, at + len(first), at + len(first) + window) >= 0:
                hits += 1
                break
            at = blob.find(first, at + 1)
    return hits


def _readable_forms(blob: bytes) -> list[bytes]:
    """The object as stored, and decompressed if it is a bare zstd frame (what anyone can undo)."""
    forms = [blob]
    if blob[:4] == b"\x28\xb5\x2f\xfd":
        try:
            forms.append(zstandard.ZstdDecompressor().decompress(blob, max_output_size=1 << 30))
        except zstandard.ZstdError:
            pass
    return forms


def test_no_stored_object_holds_the_chunk_length_table_in_the_clear(tmp_path):
    """Scan every object of an encrypted vault (config, packs with their trailers, index objects,
    manifests, locks) for the plaintext chunk lengths of a known file, as consecutive integers in each
    encoding the engine uses: none. The same scan finds them in an unencrypted vault (control)."""
    src = tmp_path / "src"
    src.mkdir()
    r = random.Random(17)
    # compressible but varied content: the lengths are not guessable from record sizes either
    data = b"".join(b"%08d %s\n" % (i, r.randbytes(24).hex().encode()) for i in range(400_000))
    (src / "known.log").write_bytes(data)
    for name in ("x", "y", "z"):
        (src / f"small-{name}.txt").write_bytes(r.randbytes(3000))
    for encrypted, name in ((True, "enc"), (False, "plain")):
        repo = new_repo(tmp_path, encrypted, name)
        backup_tree(repo, src, backup_id="b1", meta={})
        backup_tree(repo, src, backup_id="b2", meta={}, parent_backup_id="b1")
        repo.gc()
        lengths = [n for _d, n, _o in _file_chunks(repo, "b2", b"known.log")]
        assert len(lengths) >= 4 and sum(lengths) == len(data)
        objs = _objects(repo)
        assert any(k.endswith("/config") for k in objs) and any("/index/" in k for k in objs)
        hits = {k: _table_hits(f, lengths) for k, blob in objs.items() for f in _readable_forms(blob)
                if _table_hits(f, lengths)}
        if encrypted:
            assert hits == {}, f"plaintext chunk lengths found in {sorted(hits)}"
        else:
            assert any("/data/" in k for k in hits)  # the pack trailers of a plain vault list them


def test_encrypted_vault_bundles_small_files_the_same_way_every_time(tmp_path):
    """Keyed bundle cuts are stable within a vault: a full re-read of 3000 unchanged small files stores
    no bundle again, and a copy of the directory elsewhere in the tree is stored once."""
    src = tmp_path / "src"
    for d in range(30):
        (src / "a" / f"d{d:02d}").mkdir(parents=True)
        for f in range(100):
            (src / "a" / f"d{d:02d}" / f"f{f:03d}.txt").write_bytes(random.Random(d * 1000 + f).randbytes(100 + f * 37))
    repo = new_repo(tmp_path, True)
    r1 = backup_tree(repo, src, backup_id="b1", meta={})
    assert r1.files == 3000 and r1.new_chunks < 40
    r2 = backup_tree(repo, src, backup_id="b2", meta={}, full=True)
    assert r2.bytes_read == r1.bytes_read and r2.new_chunks == 0 and r2.added_bytes == 0
    os.rename(src / "a", src / "b")  # the same files under another path: same bundles, new catalog only
    r3 = backup_tree(repo, src, backup_id="b3", meta={}, full=True)
    assert r3.added_bytes < r1.added_bytes / 20, (r3.added_bytes, r1.added_bytes)
