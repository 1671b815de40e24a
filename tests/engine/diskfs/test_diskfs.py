"""Browse and extract files from disk backups made by the block engine: ext4 images built with
``mkfs.ext4 -d`` (bare, and inside MBR and GPT partition tables written by ``sfdisk``) and FAT images
(``mkfs.vfat`` + ``mcopy``), all on regular files, no mount."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from opencbr.engine.chunks.packs import pack_key
from opencbr.engine.diskfs import DiskBackupView, list_disk_tree, list_disk_volumes, restore_disk_path
from opencbr.engine.errors import Conflict, Damaged, InvalidArgument, Missing
from opencbr.engine.tree import list_backup
from tests.support.engine_tree import new_repo

MiB = 1 << 20
need = pytest.mark.skipif(not shutil.which("mkfs.ext4"), reason="mkfs.ext4 (e2fsprogs) is not installed")
need_part = pytest.mark.skipif(not shutil.which("sfdisk"), reason="sfdisk (Debian package fdisk) is not installed")
need_fat = pytest.mark.skipif(not (shutil.which("mkfs.vfat") and shutil.which("mcopy")),
                              reason="mkfs.vfat (dosfstools) and mcopy (mtools) are needed")


def run(*cmd: str, **kw) -> None:
    subprocess.run(cmd, check=True, capture_output=True, **kw)


def make_src(root: Path) -> Path:
    (root / "etc" / "conf.d").mkdir(parents=True)
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (root / "etc" / "conf.d" / "app.conf").write_text("key = value\n" * 50)
    (root / "data").mkdir()
    (root / "data" / "big.bin").write_bytes(os.urandom(3 * MiB + 123))
    (root / "data" / "empty").write_bytes(b"")
    (root / "emptydir").mkdir()
    os.symlink("etc/hosts", root / "hosts-link")
    os.chmod(root / "etc" / "hosts", 0o640)
    os.utime(root / "etc" / "hosts", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    os.setxattr(root / "etc" / "hosts", "user.origin", b"test")
    return root


def mkext4(src: Path, img: Path, size_mb: int = 24) -> Path:
    run("mkfs.ext4", "-q", "-F", "-b", "4096", "-E", "root_owner=0:0", "-d", str(src), str(img), f"{size_mb}M")
    return img


def mkfat(src: Path, img: Path, size_mb: int = 16) -> Path:
    run("mkfs.vfat", "-C", str(img), str(size_mb * 1024))
    run("mcopy", "-s", "-i", str(img), *[str(p) for p in sorted(src.iterdir()) if not p.is_symlink()], "::/",
        env=dict(os.environ, MTOOLS_SKIP_CHECK="1"))
    return img


def partitioned(img: Path, label: str, parts: list[tuple[Path | None, int, str]]) -> Path:
    """An image with partitions ``(fs image or None, size in MiB, sfdisk type)`` starting at 1 MiB."""
    total = 1 + sum(sz for _, sz, _ in parts) + 1
    with open(img, "wb") as f:
        f.truncate(total * MiB)
    script = [f"label: {label}"]
    start = 1
    for _fs, sz, typ in parts:
        script.append(f"start={start * 2048}, size={sz * 2048}, type={typ}")
        start += sz
    run("sfdisk", "-q", str(img), input="\n".join(script).encode())
    start = 1
    with open(img, "r+b") as f:
        for fs, sz, _ in parts:
            if fs is not None:
                f.seek(start * MiB)
                f.write(fs.read_bytes())
            start += sz
    return img


def check_extract(repo, backup_id: str, prefix: str, src: Path, out: Path, *, ext: bool) -> None:
    res = restore_disk_path(repo, backup_id, f"{prefix}/etc/hosts", out / "one")
    assert (out / "one" / "hosts").read_text() == "127.0.0.1 localhost\n" and res.files == 1
    if ext:
        st = os.stat(out / "one" / "hosts")
        assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_mtime_ns == 1_600_000_000_000_000_000
        assert os.getxattr(out / "one" / "hosts", "user.origin") == b"test"
    res = restore_disk_path(repo, backup_id, f"{prefix}/data", out / "dir")
    assert (out / "dir" / "data" / "big.bin").read_bytes() == (src / "data" / "big.bin").read_bytes()
    assert (out / "dir" / "data" / "empty").read_bytes() == b""
    assert res.files == 2 and res.dirs == 1
    with pytest.raises(Conflict):
        restore_disk_path(repo, backup_id, f"{prefix}/data", out / "dir")
    with pytest.raises(Missing):
        restore_disk_path(repo, backup_id, f"{prefix}/etc/nope", out / "x")
    with pytest.raises(InvalidArgument):
        list_disk_tree(repo, backup_id, f"{prefix}/../etc")


@need
def test_bare_ext4_image(tmp_path):
    repo = new_repo(tmp_path, True)
    src = make_src(tmp_path / "src")
    img = mkext4(src, tmp_path / "disk.img")
    repo.backup_disk(str(img), backup_id="d1", meta={})
    vols = list_disk_volumes(repo, "d1")
    assert [(v.name, v.fs, v.scheme) for v in vols] == [("", "ext", "none")]
    root = {e.name: e for e in list_disk_tree(repo, "d1", "/")}
    assert {"etc", "data", "emptydir", "hosts-link", "lost+found"} <= set(root)
    assert root["hosts-link"].type == "symlink" and root["hosts-link"].link_target == "etc/hosts"
    assert root["etc"].type == "dir"
    etc = {e.name: e for e in list_backup(repo, "d1", "/etc")}  # the dispatcher: disk backup
    assert set(etc) == {"hosts", "conf.d"} and etc["hosts"].size == 20 and etc["hosts"].path == "/etc/hosts"
    assert list_disk_tree(repo, "d1", "/emptydir") == []
    big = list_disk_tree(repo, "d1", "/data/big.bin")
    assert len(big) == 1 and big[0].size == 3 * MiB + 123
    check_extract(repo, "d1", "", src, tmp_path / "out", ext=True)
    res = restore_disk_path(repo, "d1", "/hosts-link", tmp_path / "out" / "l")
    assert os.readlink(tmp_path / "out" / "l" / "hosts-link") == "etc/hosts" and res.symlinks == 1


@need
@need_part
@pytest.mark.parametrize("label", ["dos", "gpt"])
def test_ext4_inside_partition_table(tmp_path, label):
    repo = new_repo(tmp_path, False)
    src = make_src(tmp_path / "src")
    fs = mkext4(src, tmp_path / "fs.img", 24)
    img = partitioned(tmp_path / "disk.img", label, [(None, 4, "L"), (fs, 24, "L")])
    repo.backup_disk(str(img), backup_id="d1", meta={})
    vols = list_disk_volumes(repo, "d1")
    assert [(v.name, v.fs, v.offset) for v in vols] == [("p1", None, MiB), ("p2", "ext", 5 * MiB)]
    assert vols[0].scheme == ("gpt" if label == "gpt" else "mbr")
    top = list_disk_tree(repo, "d1", "/")
    assert [(e.name, e.type) for e in top] == [("p1", "volume"), ("p2", "dir")]
    assert {e.name for e in list_disk_tree(repo, "d1", "/p2/etc")} == {"hosts", "conf.d"}
    with pytest.raises(InvalidArgument):
        list_disk_tree(repo, "d1", "/p1")  # no file system there
    with pytest.raises(Missing):
        list_disk_tree(repo, "d1", "/p9")
    check_extract(repo, "d1", "/p2", src, tmp_path / "out", ext=True)


@need_fat
def test_bare_fat_image(tmp_path):
    repo = new_repo(tmp_path, True)
    src = make_src(tmp_path / "src")
    (src / "A Long File Name.txt").write_text("long names work\n")
    img = mkfat(src, tmp_path / "fat.img")
    repo.backup_disk(str(img), backup_id="f1", meta={})
    assert [(v.name, v.fs) for v in list_disk_volumes(repo, "f1")] == [("", "fat")]
    names = {e.name for e in list_disk_tree(repo, "f1", "/")}
    assert {"etc", "data", "emptydir", "A Long File Name.txt"} <= names
    check_extract(repo, "f1", "", src, tmp_path / "out", ext=False)
    restore_disk_path(repo, "f1", "/A Long File Name.txt", tmp_path / "out" / "lfn")
    assert (tmp_path / "out" / "lfn" / "A Long File Name.txt").read_text() == "long names work\n"


@need_fat
@need_part
def test_fat_and_ext4_on_one_gpt_disk(tmp_path):
    repo = new_repo(tmp_path, True)
    src = make_src(tmp_path / "src")
    fat = mkfat(src, tmp_path / "fat.img", 16)
    ext = mkext4(src, tmp_path / "ext.img", 24)
    img = partitioned(tmp_path / "disk.img", "gpt", [(fat, 16, "U"), (ext, 24, "L")])
    repo.backup_disk(str(img), backup_id="d1", meta={})
    assert [(v.name, v.fs) for v in list_disk_volumes(repo, "d1")] == [("p1", "fat"), ("p2", "ext")]
    check_extract(repo, "d1", "/p1", src, tmp_path / "out1", ext=False)
    check_extract(repo, "d1", "/p2", src, tmp_path / "out2", ext=True)


@need
def test_view_reads_only_what_it_needs_and_detects_damage(tmp_path):
    repo = new_repo(tmp_path, True)
    src = make_src(tmp_path / "src")
    img = mkext4(src, tmp_path / "disk.img", 64)
    repo.backup_disk(str(img), backup_id="d1", meta={})
    view = DiskBackupView(repo.chunks, "d1")
    assert view.size == 64 * MiB
    data = img.read_bytes()
    for off, n in [(0, 4096), (1024, 100), (5 * MiB - 10, 70_000), (64 * MiB - 100, 1000)]:
        view.seek(off)
        assert view.read(n) == data[off:off + n]
    from opencbr.engine.diskfs import DiskBrowser

    b = DiskBrowser(repo, "d1")
    b.list("/etc")
    fs, node, _ = b.lookup("/etc/hosts")
    assert fs.open(node).read() == b"127.0.0.1 localhost\n"
    total_blocks = b.view.index.block_count
    assert b.view.blocks_fetched < total_blocks // 4  # browsing read a small part of the disk
    # damage the block holding /data/big.bin's first bytes: extraction fails loudly, not silently
    needle = (src / "data" / "big.bin").read_bytes()[:4096]
    blk = data.index(needle) // view.block_size
    loc = repo.chunks.reader_index(refresh=True).lookup(view.index.digest(blk))
    p = tmp_path / "store" / "vaults" / "v1" / pack_key(loc.pack_id)
    raw = bytearray(p.read_bytes())
    raw[loc.offset + loc.length // 2] ^= 1
    p.write_bytes(bytes(raw))
    with pytest.raises(Damaged):
        restore_disk_path(repo, "d1", "/data/big.bin", tmp_path / "bad")
    assert restore_disk_path(repo, "d1", "/etc/hosts", tmp_path / "good").files == 1


@need
def test_not_a_file_system(tmp_path):
    repo = new_repo(tmp_path, True)
    img = tmp_path / "random.img"
    img.write_bytes(os.urandom(2 * MiB))
    repo.backup_disk(str(img), backup_id="r1", meta={})
    assert list_disk_volumes(repo, "r1") == []
    with pytest.raises(InvalidArgument):
        list_disk_tree(repo, "r1", "/")
