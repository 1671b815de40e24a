"""Where an encrypted vault cuts: the secret half of content-defined chunking (see chunker.py).

Kept apart from chunker.py so that the catalog and bundle writers (and the restore, browse and
verify processes that import the catalog) need neither pyfastcdc nor ctypes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..chunks.crypto import RepoKeys

CUT_PUBLIC = "public"
CUT_KEYED = "keyed-v1"
_GEAR_LABEL = b"opencbr tree chunker: fastcdc gear table v1"
_CUT_TABLE_LABEL = b"opencbr tree chunker: bundle and catalog cut table v1"


@dataclass(frozen=True)
class ChunkingSecret:
    """Where an encrypted vault cuts, derived from its data key: the FastCDC gear table (256 x u64)
    and a 64 Ki-entry byte table for the CRC-based cuts of bundles and catalog chunks."""

    gear: tuple[int, ...]
    cut_table: bytes

    @classmethod
    def derive(cls, keys: RepoKeys) -> "ChunkingSecret":
        gear = struct.unpack("<256Q", keys.derive(_GEAR_LABEL, 256 * 8))
        return cls(gear, keys.derive(_CUT_TABLE_LABEL, 1 << 16))

    def cut_here(self, crc: int, modulus: int) -> bool:
        """The keyed form of ``crc % modulus == 0`` (``modulus`` a power of two up to 256)."""
        return self.cut_table[crc & 0xFFFF] % modulus == 0


def chunking_secret(keys: RepoKeys | None) -> ChunkingSecret | None:
    """The vault's secret cutting (None for an unencrypted vault: public parameters)."""
    return ChunkingSecret.derive(keys) if keys is not None else None


def cut_name(secret: ChunkingSecret | None) -> str:
    return CUT_KEYED if secret is not None else CUT_PUBLIC


def public_cut(crc: int, modulus: int) -> bool:
    return crc % modulus == 0
