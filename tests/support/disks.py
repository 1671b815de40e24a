"""Disk images for tests: realistic mixes of zeros, text and random data, small enough for CI."""

from __future__ import annotations

import hashlib
import os
import random
import stat

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from opencbr.system.sparse import data_extents

MiB = 1024 * 1024
MARKER = b"OPENCBR-PLAINTEXT-MARKER-7f3a9c"


def make_image(path, size: int = 8 * MiB, seed: int = 1, marker: bytes = MARKER) -> str:
    """64 KiB regions: a third zero, a third text (with ``marker`` in it), a third random."""
    rng = random.Random(seed)
    region = 64 * 1024
    with open(path, "wb") as f:
        for off in range(0, size, region):
            kind = rng.random()
            if kind < 0.33:
                f.seek(off + region)
                continue
            if kind < 0.66:
                line = b"log line %d: the quick brown fox " % rng.randrange(10**6) + marker + b"\n"
                data = (line * (region // len(line) + 1))[:region]
            else:
                data = rng.randbytes(region)
            f.write(data)
        f.truncate(size)
    return str(path)


def mutate(path, seed: int = 2, regions: int = 8) -> None:
    """Rewrite a few scattered 64 KiB regions in place."""
    rng = random.Random(seed)
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        for _ in range(regions):
            f.seek(rng.randrange(size // (64 * 1024)) * 64 * 1024)
            f.write(rng.randbytes(64 * 1024))


_ZEROS = memoryview(bytes(MiB))


def sha256(path) -> str:
    """The SHA-256 of the file's bytes. Holes are hashed as the zeros they read as, without reading
    them: the crash tests empty most of a 3 GiB disk after the kill, and reading its holes back (the
    kernel filling pages with zeros) cost as much CPU as hashing them."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):  # a device or a pipe: no holes to find, and no size
            return hashlib.file_digest(f, "sha256").hexdigest()
        size, pos = st.st_size, 0
        for start, length in [*data_extents(f.fileno(), size), (size, 0)]:
            _hash_zeros(h, start - pos)
            f.seek(start)
            _hash_read(h, f, length)
            pos = start + length
    return h.hexdigest()


def _hash_zeros(h, n: int) -> None:
    while n > 0:
        h.update(_ZEROS[:min(n, MiB)])
        n -= MiB


def _hash_read(h, f, n: int) -> None:
    """``n`` bytes from ``f``'s position; fewer if the file shrank meanwhile (its hash then differs)."""
    while n > 0:
        b = f.read(min(n, MiB))
        if not b:
            return
        h.update(b)
        n -= len(b)


def flip_byte(path, offset: int | None = None) -> None:
    """Damage a stored object in place: one bit of the byte at ``offset`` (default: the middle)."""
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2 if offset is None else offset)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x40]))


def random_stream(size: int, block: int = MiB):
    """``size`` bytes that no compressor or deduplicator can shrink, in blocks of ``block``: a ChaCha20
    keystream under a fresh key, so no two calls repeat. Several times cheaper than ``os.urandom`` (about
    2.4 GB/s of CPU against 0.27 GB/s on the 2-core CI machine), where the gigabyte images of the crash
    tests spent ~50 s of the suite's CPU. Blocks of 1 MiB, not 16: each 16 MiB block was memory the
    allocator took from the kernel and gave back (zeroed pages, faults), 2-5 s of system time per 3 GiB
    image against 0.6-1.4 s."""
    # (the nonce's first 4 bytes are the block counter: starting at 0 it lasts 256 GiB, starting at a
    # random value it overflowed now and then in a test writing a few GiB)
    nonce = bytes(4) + os.urandom(12)
    keystream = Cipher(algorithms.ChaCha20(os.urandom(32), nonce), mode=None).encryptor()
    zeros = bytes(block)
    for off in range(0, size, block):
        yield keystream.update(zeros[:min(block, size - off)])


def big_random_image(path, size: int) -> str:
    """All random (nothing to compress or deduplicate), written 1 MiB at a time: for backups that must
    run long enough to be interrupted."""
    with open(path, "wb") as f:
        for data in random_stream(size):
            f.write(data)
    return str(path)


def registered_disks(ctx, owner, roots, disks: dict[str, tuple[int, int]]) -> list:
    """Disks ``{name: (size, seed)}`` made as images under ``roots`` and registered as ``owner``'s, in order."""
    from opencbr.services import resources

    paths = {name: make_image(roots / f"{name}.img", size, seed=seed) for name, (size, seed) in disks.items()}
    with ctx.tx() as s:
        return [resources.register_disk(s, ctx, owner, name=name, path=path) for name, path in paths.items()]
