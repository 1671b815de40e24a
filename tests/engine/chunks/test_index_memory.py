"""The repository index in bounded memory (chunks/diskindex.py): a reader's open and GC peak at the same
RSS on a vault of N chunks and on one of 8 N, each measured in a process of its own (its ``VmHWM``: the
peak of its own memory since exec; ``wait4``'s ru_maxrss would also count the test process it was
forked from, which grows with the vault it built)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import opencbr
from opencbr.engine import Repository
from opencbr.engine.chunks.session import WriteSession
from opencbr.storage import open_store

N = 16_384  # two full packs per backup (8,192 records each): no small packs for GC to merge
MEMORY_ENTRIES = 1024  # the memory setting: a few thousand digests, then to disk

_CHILD = textwrap.dedent("""
    import sys
    from opencbr.engine import Repository
    from opencbr.storage import open_store

    root, op, scratch = sys.argv[1:4]
    repo = Repository.open(open_store(root), "v/", None)
    repo.chunks.memory_entries = int(sys.argv[4])
    repo.chunks.spill_dir = scratch
    if op == "open":  # what a restore, verify or export does first: the index, then look-ups
        idx = repo.chunks.reader_index()
        assert sum(idx.has(repo.chunks.codec.digest(b"1.%d" % i)) for i in range(2000)) == 2000
    elif op == "gc":
        repo.delete_backup("garbage")
        assert repo.gc().packs_deleted >= 1
    with open("/proc/self/status") as f:
        print(next(line.split()[1] for line in f if line.startswith("VmHWM:")))
""")


def _fill(repo, name: str, seed: int, count: int) -> None:
    """A backup of ``count`` tiny unique chunks through the real write path."""
    session = WriteSession(repo.chunks)
    refs = b"".join(session.put_chunk(b"%d.%d" % (seed, i)).digest for i in range(count))
    session.commit(name, {"type": "generated"}, refs)


def _peak_rss_kib(root: Path, op: str, scratch: Path) -> int:
    src = str(Path(opencbr.__file__).parents[1])  # the code under test, in the child too
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    out = subprocess.run([sys.executable, "-c", _CHILD, root.as_uri(), op, str(scratch), str(MEMORY_ENTRIES)],
                         env=env, check=True, capture_output=True, text=True).stdout
    return int(out.split()[-1])


def test_open_and_gc_peak_rss_do_not_grow_with_the_vault(tmp_path):
    root, scratch = tmp_path / "store", tmp_path / "scratch"
    scratch.mkdir()
    repo = Repository.create(open_store(root.as_uri()), "v/", None, encrypted=False)
    repo.chunks.spill_dir = str(scratch)  # the backups run on this machine: the index learns their objects
    peaks = {}
    # backups of N chunks each, so that the largest manifest (read whole: not this test's subject) is
    # the same in both vaults
    for size, seeds in (("N", [1]), ("8N", range(2, 9))):
        for seed in seeds:
            _fill(repo, f"g{seed}", seed, N)
        _fill(repo, "garbage", 100 + len(seeds), 9000)  # more than one pack's worth (8,192 records)
        peaks[size] = {op: _peak_rss_kib(root, op, scratch) for op in ("open", "gc")}
    for op in ("open", "gc"):
        small, large = peaks["N"][op], peaks["8N"][op]
        assert large <= small * 1.15, f"{op}: {small} KiB at {N} chunks, {large} KiB at {8 * N}"
