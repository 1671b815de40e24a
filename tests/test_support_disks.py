"""The tests' disk images (tests/support/disks.py): the big random ones the crash tests interrupt must stay
incompressible and unique (or a backup would shrink them and finish before the kill), and cheap to make
(they are gigabytes: os.urandom spent ~50 s of the suite's CPU on them)."""

from __future__ import annotations

import os
import time
import zlib

from tests.support.disks import MiB, big_random_image, random_stream, sha256


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


def test_random_stream_costs_a_fraction_of_os_urandom():
    """CPU time, not wall time: the same on a loaded machine (measured 0.1 s against 0.95 s here)."""
    size = 128 * MiB
    start = time.process_time()
    produced = sum(len(block) for block in random_stream(size))
    ours = time.process_time() - start
    start = time.process_time()
    for _ in range(size // (16 * MiB)):
        os.urandom(16 * MiB)
    urandom = time.process_time() - start
    assert produced == size
    assert ours < urandom / 3, (ours, urandom)
