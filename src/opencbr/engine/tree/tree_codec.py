"""The codec tree backups store chunks with: the engine's :class:`ChunkCodec` (same record format,
keys and digests, so every reader decodes our chunks unchanged) at a zstd level chosen for file data.

Level (measured on ``make_dataset.py tree``, 30k files, 1.63 GB, encrypted repository): the engine's
level 1 stored 1.116 GB, *more* than restic (1.112 GB, whose "auto" compression is about zstd 3), so it
would miss the "stored bytes no more than restic" target; level 3 (~13% smaller text chunks, ~25% more
compression CPU; incompressible chunks cost the same at every level since zstd skips them at
6-7 GB/s) -- see ``TREE_ZSTD_LEVEL`` and bench/tree.py.
"""

from __future__ import annotations

from ..chunks.codec import ChunkCodec
from ..chunks.store import ChunkStore

TREE_ZSTD_LEVEL = 3


def tree_codec(cs: ChunkStore, level: int = TREE_ZSTD_LEVEL) -> ChunkCodec:
    """A fresh codec (one per thread: zstd contexts are not thread-safe) for writing tree chunks."""
    return ChunkCodec(cs.codec.keys, cs.codec.max_chunk, level)
