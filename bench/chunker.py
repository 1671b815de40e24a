"""Chunker throughput: FastCDC cuts through ``FileChunker``'s streaming loop, public vs keyed gear table.

    python bench/chunker.py [--mib 256] [--repeat 5]

Chunks ``--mib`` MiB of random data held in memory (no disk, no hashing or storing: ``put`` returns
at once), so only the cut loop and its buffer moves are timed; reports the best of ``--repeat`` runs
in wall time and in CPU time of the process (the machine is shared: the best run is the least
disturbed one, and CPU time does not count the time we waited for a core). "keyed" is the gear table an
encrypted vault derives from its data key (see engine/tree/chunker.py).
"""

from __future__ import annotations

import argparse
import os
import time

from opencbr.engine.tree.chunker import DEFAULT_PARAMS, FileChunker, FileData


class _MemorySource:
    def __init__(self, data: bytes):
        self.mv = memoryview(data)
        self.pos = 0

    def readinto(self, out: memoryview) -> int:
        n = min(len(out), len(self.mv) - self.pos)
        out[:n] = self.mv[self.pos:self.pos + n]
        self.pos += n
        return n


def _gear(variant: str):
    if variant == "public":
        return None
    from opencbr.engine.chunks.crypto import RepoKeys
    from opencbr.engine.tree.cutting import ChunkingSecret

    return ChunkingSecret.derive(RepoKeys.generate()).gear


def run(mib: int, repeat: int) -> dict[str, float]:
    data = os.urandom(mib << 20)
    out: dict[str, float] = {}
    for variant in ("public", "keyed"):
        try:
            gear = _gear(variant)
        except ImportError:  # (the code before keyed chunking)
            continue
        kw = {"gear": gear} if gear is not None else {}
        ch = FileChunker(DEFAULT_PARAMS, lambda d: b"", **kw)
        best = best_cpu = float("inf")
        for _ in range(repeat):
            fd = FileData()
            t0, c0 = time.perf_counter(), time.process_time()
            ch._chunk_stream(_MemorySource(data), fd)
            best = min(best, time.perf_counter() - t0)
            best_cpu = min(best_cpu, time.process_time() - c0)
            assert fd.bytes_read == len(data)
        out[variant] = mib / best  # MiB/s
        print(f"{variant:7s} {mib} MiB: best of {repeat} {best:.3f} s = {out[variant]:.0f} MiB/s wall, "
              f"{mib / best_cpu:.0f} MiB/s CPU, {len(fd.chunks)} chunks")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--repeat", type=int, default=5)
    a = ap.parse_args()
    run(a.mib, a.repeat)


if __name__ == "__main__":
    main()
