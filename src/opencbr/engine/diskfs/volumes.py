"""Finding the file systems inside a disk image: a bare file system, or an MBR/GPT partition table.

A bare file system is tried first, because a FAT boot sector also ends in the ``55 AA`` signature an
MBR parser would accept; an MBR disk has no ext superblock at 1 KiB and no valid BPB in sector 0.
Partitions come from ``dissect.volume`` (GPT before MBR; extended/logical MBR partitions included);
each is probed for ext/FAT. Volumes are named ``p<N>`` by partition number.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import BinaryIO

from dissect.util.stream import RangeStream

from .filesystems import probe

_SKIP_MBR_TYPES = {0x00, 0x05, 0x0F, 0x85}  # empty, extended containers (their logicals are listed)


@dataclass
class Volume:
    name: str  # "" for a file system on the whole disk, else "p<N>"
    number: int  # partition number, 0 for the whole disk
    offset: int
    size: int
    fs: str | None  # "ext", "fat" or None (not a supported file system)
    scheme: str  # "none", "mbr", "gpt", ...
    type: str = ""  # partition type as the table names it

    def to_dict(self) -> dict:
        return asdict(self)


def range_of(fh: BinaryIO, offset: int, size: int) -> BinaryIO:
    return RangeStream(fh, offset, size)


def find_volumes(fh: BinaryIO, size: int) -> list[Volume]:
    kind = probe(fh)
    if kind is not None:
        return [Volume("", 0, 0, size, kind, "none")]
    from dissect.volume.disk import Disk

    try:
        fh.seek(0)
        disk = Disk(fh)
    except Exception:  # noqa: BLE001 - no partition table we know
        return []
    scheme = type(disk.scheme).__name__.lower()
    out = []
    for p in disk.partitions:
        if isinstance(p.type, int) and p.type in _SKIP_MBR_TYPES:
            continue
        if p.size <= 0 or p.offset + p.size > size:
            continue
        fs = probe(range_of(fh, p.offset, p.size))
        out.append(Volume(f"p{p.number}", p.number, p.offset, p.size, fs, scheme, str(p.type_str or p.type)))
    out.sort(key=lambda v: v.number)
    return out
