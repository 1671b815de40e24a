"""Helpers for the engine tests: deterministic disk images, repositories with fast lock timing, and the
child processes (``tests.support.engine_child``) the crash and concurrency tests start."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

from opencbr.engine import LockTiming, Repository

MASTER_KEY = bytes(range(32))
BS = 4096  # small blocks keep test images small while exercising many chunks
FAST_LOCKS = LockTiming(refresh_interval=0.2, stale_after=3.0)


_POOLS: dict[tuple[int, int], list[bytes]] = {}


def _pool(n: int, bs: int) -> list[bytes]:
    if (n, bs) not in _POOLS:
        _POOLS[(n, bs)] = [random.Random(f"pool-{i}").randbytes(bs) for i in range(n)]
    return _POOLS[(n, bs)]


def make_image(path: Path | str, nblocks: int, seed: int, *, bs: int = BS, zero_frac: float = 0.3,
               pool: int = 0, sparse_tail: int = 0, marker: bytes | None = None, extra: int = 0) -> str:
    """A disk image of ``nblocks`` blocks: zero blocks, random blocks, text-like blocks; with ``pool``
    > 0 data blocks are drawn from a shared pool of that many blocks (cross-image dedup). The last
    ``sparse_tail`` blocks are left as a hole; ``extra`` bytes make a partial last block."""
    r = random.Random(seed)
    pool_blocks = _pool(pool, bs)
    with open(path, "wb") as f:
        for i in range(nblocks - sparse_tail):
            x = r.random()
            if x < zero_frac:
                f.write(bytes(bs))
            elif pool_blocks and x < 0.8:
                f.write(r.choice(pool_blocks))
            elif x < 0.9:
                f.write((b"line %d of text %d\n" % (i, seed) * (bs // 16))[:bs])
            else:
                f.write(r.randbytes(bs))
        if marker:
            f.seek(bs * (nblocks // 2) + 100)
            f.write(marker)
        f.truncate(nblocks * bs + extra)
    return str(path)


def sha256_file(path: str | Path, size: int | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while True:
            b = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not b:
                break
            h.update(b)
            if left is not None:
                left -= len(b)
                if left <= 0:
                    break
    return h.hexdigest()


def new_repo(store, encrypted: bool = True, prefix: str = "vaults/v1/", **kw) -> Repository:
    return Repository.create(store, prefix, MASTER_KEY if encrypted else None, encrypted=encrypted,
                             block_size=kw.pop("block_size", BS), pack_size=kw.pop("pack_size", 256 << 10),
                             lock_timing=kw.pop("lock_timing", FAST_LOCKS), **kw)


def all_objects(store, prefix: str = "") -> dict[str, bytes]:
    return {k: store.get(k) for k, _ in store.list(prefix)}


REPO_ROOT = Path(__file__).resolve().parents[2]


def child_env() -> dict:
    """The environment of a child Python process: this checkout's sources and its ``tests`` package first."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT / "src"), str(REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


CHILD = str(Path(__file__).resolve().parent / "engine_child.py")  # run as a script, with child_env()


def assert_clean(repo) -> None:
    """Nothing is left but what the backups need: no locks, no condemned lists, every pack indexed and
    holding at least one referenced chunk, every referenced chunk indexed."""
    from opencbr.engine.chunks.packs import pack_key

    cs = repo.chunks
    store = repo.store
    assert list(store.list(repo.prefix + "locks/")) == []
    assert list(store.list(repo.prefix + "gc/")) == []
    idx = cs.load_index()
    refs = cs.referenced()
    packs = {k.rsplit("/", 1)[-1] for k, _ in store.list(repo.prefix + "data/")}
    assert packs == set(idx.pack_ids), "unindexed packs or index entries for missing packs"
    for p in idx.pack_ids:
        assert any(d in refs for d, _, _ in idx.entries(p)), f"pack {p} holds no referenced chunk"
        assert store.head(repo.prefix + pack_key(p)) is not None
    assert all(idx.lookup(d) is not None for d in refs)


class PacedStore:
    """Wraps a real store and makes index writes slower, so a backup spends longer in the window
    "packs written, not yet indexed" that GC must respect (widens races without mocking anything)."""

    def __init__(self, inner, delay: float = 0.03):
        self._inner = inner
        self._delay = delay

    def put(self, key, data, *, sync=True):
        if "/index/" in key:
            import time

            time.sleep(self._delay)
        return self._inner.put(key, data, sync=sync)

    def __getattr__(self, name):
        return getattr(self._inner, name)
