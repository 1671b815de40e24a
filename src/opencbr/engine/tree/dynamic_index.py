"""The dynamic index of a file-system (tree) backup: how a backup is stored as one manifest.

A tree backup is one manifest (see ``engine/manifests.py``) with

- ``header``: ``{"type": "tree", "format": 1, "backup_id", "created", "parent", "meta" (verbatim),
  "partial", "warnings" (first 100), "stats": {...}, "chunking": {...}}``;
- ``refs``: every chunk digest the backup needs -- the file data chunks *and* the catalog chunks --
  so the chunk store's GC, usage and verify keep and count them with no knowledge of trees (the
  same contract as the disk fixed index). Duplicates are allowed by the manifest format; we do not
  spend memory on a set to remove them;
- ``payload``: the list of *catalog chunks*: the catalog (one record per entry, see ``entry.py``) is
  cut into chunks of ~64 KiB at content-defined entry boundaries and stored through the chunk store
  like file data (deduplicated, compressed, encrypted, packed), so a million files become a few
  hundred records inside a handful of packs, and the unchanged parts of a catalog are shared between
  backups. Per catalog chunk the payload keeps its digest, entry count, plaintext length and the key
  of its first entry, so browsing or restoring one path fetches only the catalog chunks that can
  hold it (bisect on first keys)::

      b"OCBRDIX1" | u32 count | count x (32s digest, u32 entries, u32 raw_len, u16 klen, key)
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass, field

from ..chunks.manifests import Manifest
from ..errors import Damaged

MAGIC = b"OCBRDIX1"
FORMAT = 1
_COUNT = struct.Struct("<I")
_DESC = struct.Struct("<32sIIH")


@dataclass(frozen=True)
class CatalogChunk:
    digest: bytes
    entries: int
    raw_len: int
    first_key: bytes


@dataclass
class DynamicIndex:
    backup_id: str
    header: dict
    catalog: list[CatalogChunk] = field(default_factory=list)
    _firsts: list[bytes] | None = None

    @property
    def stats(self) -> dict:
        return self.header.get("stats", {})

    def start_chunk(self, key: bytes) -> int:
        """Index of the first catalog chunk that may hold ``key`` (or anything after it)."""
        if self._firsts is None:
            self._firsts = [c.first_key for c in self.catalog]
        return max(0, bisect.bisect_right(self._firsts, key) - 1)

    # -- (de)serialisation --------------------------------------------------------------------------
    def encode_payload(self) -> bytes:
        parts = [MAGIC, _COUNT.pack(len(self.catalog))]
        for c in self.catalog:
            parts += (_DESC.pack(c.digest, c.entries, c.raw_len, len(c.first_key)), c.first_key)
        return b"".join(parts)

    @classmethod
    def from_manifest(cls, m: Manifest) -> "DynamicIndex":
        if m.header.get("type") != "tree":
            raise Damaged(f"backup {m.name} is not a file-system backup", backup_id=m.name)
        if int(m.header.get("format", 0)) > FORMAT:
            raise Damaged(f"backup {m.name}: unsupported tree format {m.header.get('format')}", backup_id=m.name)
        p = m.payload
        if p[:8] != MAGIC:
            raise Damaged(f"backup {m.name}: bad catalog list", backup_id=m.name)
        try:
            (n,) = _COUNT.unpack_from(p, 8)
            pos = 12
            out = []
            for _ in range(n):
                d, ents, raw, kl = _DESC.unpack_from(p, pos)
                pos += _DESC.size
                out.append(CatalogChunk(d, ents, raw, bytes(p[pos:pos + kl])))
                pos += kl
        except struct.error:
            raise Damaged(f"backup {m.name}: truncated catalog list", backup_id=m.name) from None
        if pos != len(p):
            raise Damaged(f"backup {m.name}: trailing bytes in catalog list", backup_id=m.name)
        return cls(m.name, m.header, out)
