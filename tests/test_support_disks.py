"""The tests' disk images (tests/support/disks.py): the big random ones the crash tests interrupt must stay
incompressible and unique (or a backup would shrink them and finish before the kill). (They come from a
ChaCha20 keystream, ~9x cheaper in CPU than os.urandom here; measured once, not asserted: CI does not time
things.)"""

from __future__ import annotations

import hashlib
import os
import zlib

from tests.support.disks import MiB, big_random_image, sha256


def test_big_random_image_is_exact_unique_and_incompressible(tmp_path):
    a = big_random_image(tmp_path / "a.img", 16 * MiB + 4096)
    b = big_random_image(tmp_path / "b.img", 16 * MiB + 4096)
    assert os.path.getsize(a) == os.path.getsize(b) == 16 * MiB + 4096
    assert sha256(a) != sha256(b), "two images share their content: a backup would deduplicate them"
    with open(a, "rb") as f:
        data = f.read()
    blocks = {data[off:off + 4096] for off in range(0, len(data), 4096)}
    assert len(blocks) == len(data) // 4096, "a 4 KiB block repeats: a backup would deduplicate it"
    assert len(zlib.compress(data[:MiB], 1)) > MiB, "the image compresses"


def test_sha256_hashes_holes_as_the_zeros_they_read_as(tmp_path):
    # holes at the start, between data and at the end, none of them a whole number of MiB
    path = tmp_path / "sparse.img"
    with open(path, "wb") as f:
        for offset in (3 * MiB + 100, 7 * MiB + 4096 * 3):
            f.seek(offset)
            f.write(os.urandom(MiB + 12345))
        f.truncate(12 * MiB + 7)
    with open(path, "rb") as f:
        assert sha256(path) == hashlib.sha256(f.read()).hexdigest()
    empty = tmp_path / "empty.img"
    empty.touch()
    assert sha256(empty) == hashlib.sha256(b"").hexdigest()
    assert sha256("/dev/null") == hashlib.sha256(b"").hexdigest()  # not a regular file: read, not sized
