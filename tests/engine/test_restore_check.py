"""The file system's own check in a restore test (engine/restore_check.py): e2fsck fails an ext4 image
whose superblock was scrambled, and passes a clean one."""

from __future__ import annotations

import struct
import subprocess

from opencbr.engine.restore_check import CheckReport, check_filesystems
from tests.support.disks import MiB


def test_broken_file_system_fails_its_own_check(tmp_path):
    """The file system's own check, on an image whose ext4 superblock counts were scrambled."""
    img = str(tmp_path / "broken.img")
    with open(img, "wb") as f:
        f.truncate(4 * MiB)
    subprocess.run(["mkfs.ext4", "-q", "-F", img], check=True, capture_output=True)
    clean = CheckReport("b", "disk")
    check_filesystems(img, clean, str(tmp_path))
    assert clean.ok and [v["ok"] for v in clean.filesystems] == [True]
    with open(img, "r+b") as f:  # s_inodes_count (superblock at 1024) set to nonsense
        f.seek(1024)
        f.write(b"\x01\x00\x00\x00")
    report = CheckReport("b", "disk")
    check_filesystems(img, report, str(tmp_path))
    assert not report.ok and report.filesystems[0]["fs"] == "ext" and report.filesystems[0]["ok"] is False


def test_fat_in_a_partition_is_checked_by_fsck_vfat(tmp_path):
    """A FAT file system in an MBR partition: copied out to a file (the tools take no offset) and checked;
    the copy is gone afterwards."""
    img = str(tmp_path / "mbr.img")
    with open(img, "wb") as f:
        f.truncate(8 * MiB)
        entry = struct.pack("<B3sB3sII", 0, b"\0\0\0", 0x0C, b"\0\0\0", 2048, 8 * MiB // 512 - 2048)
        f.seek(446)
        f.write(entry)
        f.seek(510)
        f.write(b"\x55\xaa")
    subprocess.run(["mkfs.vfat", "--offset", "2048", img, str((8 * MiB // 512 - 2048) // 2)], check=True,
                   capture_output=True)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    report = CheckReport("b", "disk")
    check_filesystems(img, report, str(scratch))
    assert report.ok and [(v["volume"], v["fs"], v["ok"]) for v in report.filesystems] == [("p1", "fat", True)]
    assert list(scratch.iterdir()) == []
