"""Readying the databases of a restored disk: the agent mounts the restored file system (an image file
through a loop device, or a block device), writes each PostgreSQL cluster's backup label and WAL, and
unmounts it; a mounted target or one without a file system is left alone, with the steps to take."""

from __future__ import annotations

import base64
import os
import subprocess
import zlib

import pytest

from opencbr.agent import mounts
from opencbr.agent.hooks import prepare_restored_disk

SOURCE = "/srv/pgdisk"  # where the backed-up disk was mounted on the protected host
LABEL = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nSTART TIMELINE: 1\n"


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)


def _record(data_dir: str = f"{SOURCE}/15/main") -> dict:
    wal = b"\x01" * 100
    return {"achieved": "app_consistent", "hooks": [{"name": "pg", "kind": "postgresql", "details": {
        "data_dir": data_dir, "backup_label": LABEL, "wal_segment_size": 1 << 20,
        "wal": [{"file": "000000010000000000000002", "offset": 40, "length": len(wal),
                 "zlib_base64": base64.b64encode(zlib.compress(wal)).decode()}]}}]}


@pytest.fixture
def restored_image(tmp_path):
    """A raw image holding ext4 with the data directory ``15/main`` (with ``pg_wal/``), as a disk restore
    leaves it; mounted nowhere."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    image = tmp_path / "restored.img"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    seed = tmp_path / "seed"
    (seed / "15" / "main" / "pg_wal").mkdir(parents=True)
    (seed / "15" / "main" / "postmaster.pid").write_text("4242\n")
    if _run("mkfs.ext4", "-q", "-d", str(seed), str(image)).returncode:
        pytest.skip("cannot make an ext4 image here")
    return str(image)


def _read_back(image: str, tmp_path, *names: str) -> dict[str, bytes]:
    point = tmp_path / "check"
    point.mkdir()
    assert _run("mount", "-o", "loop,ro", image, str(point)).returncode == 0
    try:
        return {n: (point / n).read_bytes() if (point / n).exists() else None for n in names}
    finally:
        _run("umount", str(point))


def test_an_image_is_mounted_readied_and_unmounted(restored_image, tmp_path):
    work = tmp_path / "mnt"
    done = prepare_restored_disk(_record(), SOURCE, restored_image, str(work))
    assert any(line.endswith("wrote backup_label") for line in done), done
    assert any("bytes of WAL into pg_wal/000000010000000000000002" in line for line in done), done
    assert os.listdir(work) == []  # unmounted, its directory removed
    assert not [m for m in mounts.mounts() if m.mountpoint.startswith(str(work))]
    got = _read_back(restored_image, tmp_path, "15/main/backup_label", "15/main/postmaster.pid",
                     "15/main/pg_wal/000000010000000000000002")
    assert got["15/main/backup_label"] == LABEL.encode() and got["15/main/postmaster.pid"] is None
    assert got["15/main/pg_wal/000000010000000000000002"][40:140] == b"\x01" * 100


def test_clusters_elsewhere_or_no_mount_point_need_nothing(restored_image, tmp_path):
    assert prepare_restored_disk(_record("/var/lib/postgresql/15/main"), SOURCE, restored_image, str(tmp_path)) == []
    assert prepare_restored_disk(_record(), None, restored_image, str(tmp_path)) == []


def test_a_target_without_a_file_system_gets_the_steps(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    blank = tmp_path / "blank.img"
    with open(blank, "wb") as f:
        f.truncate(4 << 20)
    (said,) = prepare_restored_disk(_record(), SOURCE, str(blank), str(tmp_path / "mnt"))
    assert said.startswith("not prepared: ") and "holds no file system the agent can mount" in said
    assert "prepare-postgres" in said and f"{SOURCE}/15/main" in said


def test_a_mounted_target_is_left_alone(restored_image, tmp_path):
    dev = _run("losetup", "-f", "--show", restored_image).stdout.strip()
    if not dev:
        pytest.skip("no loop device here")
    point = tmp_path / "inuse"
    point.mkdir()
    try:
        assert _run("mount", dev, str(point)).returncode == 0
        (said,) = prepare_restored_disk(_record(), SOURCE, dev, str(tmp_path / "mnt"))
        assert f"{dev} is mounted" in said and not (point / "15" / "main" / "backup_label").exists()
    finally:
        _run("umount", str(point))
        _run("losetup", "-d", dev)


def test_a_partitioned_image_has_the_partition_holding_the_clusters_readied(tmp_path):
    """GPT with two partitions, the data directory on the second: found, readied, unmounted."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    image = tmp_path / "parted.img"
    with open(image, "wb") as f:
        f.truncate(40 << 20)
    table = "label: gpt\nstart=2048, size=16384\nstart=20480, size=40960\n"  # sectors: 8 MiB at 1, 20 MiB at 10
    if subprocess.run(["sfdisk", "-q", str(image)], input=table, capture_output=True, text=True).returncode:
        pytest.skip("sfdisk is not installed")
    empty, seed = tmp_path / "empty", tmp_path / "seed"
    empty.mkdir()
    (seed / "15" / "main" / "pg_wal").mkdir(parents=True)
    for offset, size, content in ((1 << 20, 8 << 20, empty), (10 << 20, 20 << 20, seed)):
        made = _run("mkfs.ext4", "-q", "-d", str(content), "-E", f"offset={offset}", str(image), f"{size >> 10}k")
        assert made.returncode == 0, made.stderr
    done = prepare_restored_disk(_record(), SOURCE, str(image), str(tmp_path / "mnt"), restored=os.stat(image))
    assert any(line.endswith("wrote backup_label") for line in done), done  # (a partition's loop: the image)
    assert not [m for m in mounts.mounts() if m.mountpoint.startswith(str(tmp_path / "mnt"))]
    point = tmp_path / "check"
    point.mkdir()
    assert _run("mount", "-o", f"loop,ro,offset={10 << 20}", str(image), str(point)).returncode == 0
    try:
        assert (point / "15" / "main" / "backup_label").read_bytes() == LABEL.encode()
    finally:
        _run("umount", str(point))


def test_links_in_a_restored_file_system_lead_nothing_onto_the_host(tmp_path):
    """The restored file system is the tenant's data, mounted by root on the host: a backup_label and a
    pg_wal that are links to the host's files get nothing written through them."""
    if os.geteuid() != 0:
        pytest.skip("mounting needs root")
    victim, live_wal = tmp_path / "victim", tmp_path / "live-wal"
    victim.write_text("the host's file")
    live_wal.mkdir()
    seed = tmp_path / "seed"
    (seed / "15" / "main").mkdir(parents=True)
    (seed / "15" / "main" / "backup_label").symlink_to(victim)
    (seed / "15" / "main" / "pg_wal").symlink_to(live_wal)
    image = tmp_path / "crafted.img"
    with open(image, "wb") as f:
        f.truncate(16 << 20)
    if _run("mkfs.ext4", "-q", "-d", str(seed), str(image)).returncode:
        pytest.skip("cannot make an ext4 image here")
    done = prepare_restored_disk(_record(), SOURCE, str(image), str(tmp_path / "mnt"))
    assert victim.read_text() == "the host's file" and os.listdir(live_wal) == []
    assert any("WAL not written: pg_wal is a symbolic link" in line for line in done), done
    got = _read_back(str(image), tmp_path, "15/main/backup_label")
    assert got["15/main/backup_label"] == LABEL.encode()  # (a file of its own now, in the restored tree)


def test_a_mount_held_busy_is_still_unmounted(restored_image, tmp_path, monkeypatch):
    """Something of the agent's may be inside its mount of a restored file system when it unmounts it (the
    inventory walking the roots): the mount does not stay on the host -- asked again, then detached."""
    from opencbr.agent.hooks import restored_disk

    monkeypatch.setattr(restored_disk, "UNMOUNT_PAUSE", 0.01)
    point = tmp_path / "point"
    point.mkdir()
    assert _run("mount", "-o", "loop", restored_image, str(point)).returncode == 0
    held = os.open(point / "15", os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert _run("umount", str(point)).returncode != 0  # (busy: the situation under test)
        restored_disk.unmount(str(point))
        assert not os.path.ismount(point)
    finally:
        os.close(held)


def test_a_target_swapped_after_the_restore_is_not_what_gets_readied(restored_image, tmp_path):
    """``mount`` is given the target's path: whoever can write in the image's directory could swap it for
    a link to another file or device (a host disk outside the device patterns) between the restore and
    the mount, and the agent wrote the tenant's backup label and WAL into what that held, as root."""
    other = tmp_path / "other.img"
    with open(other, "wb") as f:
        f.truncate(16 << 20)
    seed = tmp_path / "seed-other"
    (seed / "15" / "main" / "pg_wal").mkdir(parents=True)
    assert _run("mkfs.ext4", "-q", "-d", str(seed), str(other)).returncode == 0
    restored = os.stat(restored_image)
    swapped = tmp_path / "swapped.img"  # the restored image's name, now a link to another file system
    swapped.symlink_to(other)
    (said,) = prepare_restored_disk(_record(), SOURCE, str(swapped), str(tmp_path / "mnt"), restored=restored)
    assert "was replaced after the restore" in said and "not prepared" in said
    assert _read_back(str(other), tmp_path, "15/main/backup_label")["15/main/backup_label"] is None
    assert not [m for m in mounts.mounts() if m.mountpoint.startswith(str(tmp_path / "mnt"))]
    # the image the restore wrote, under its own name: readied as before
    done = prepare_restored_disk(_record(), SOURCE, restored_image, str(tmp_path / "mnt2"), restored=restored)
    assert any(line.endswith("wrote backup_label") for line in done), done
