"""Browse and restore single files from a *disk* backup whose image holds an ext4 file system, with a
partition table or none, without restoring the disk (beyond guide 13.2.15)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.support.clients import api, cli, task_ok

pytestmark = pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="mkfs.ext4 (e2fsprogs) is not installed")
MiB = 1024 * 1024


def ext4_image(tmp_path, name, *, partitioned: bool) -> tuple[str, bytes]:
    content = tmp_path / f"{name}-content"
    (content / "etc").mkdir(parents=True)
    payload = b"nameserver 10.0.0.1\n" * 100
    (content / "etc" / "resolv.conf").write_bytes(payload)
    (content / "home" / "alice").mkdir(parents=True)
    (content / "home" / "alice" / "notes.txt").write_text("remember the milk\n")
    img = tmp_path / f"{name}.img"
    if partitioned:
        fs = tmp_path / f"{name}.fs"
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(content), str(fs), "16M"], check=True)
        with open(img, "wb") as f:
            f.truncate(20 * MiB)
        subprocess.run(["sfdisk", "-q", str(img)], input="label: gpt\nstart=2048, size=32768, type=linux\n",
                       text=True, check=True)
        with open(fs, "rb") as src, open(img, "r+b") as dst:
            dst.seek(2048 * 512)
            shutil.copyfileobj(src, dst)
    else:
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(content), str(img), "16M"], check=True)
    return str(img), payload


@pytest.mark.parametrize("partitioned", [False, True], ids=["bare", "gpt"])
def test_files_from_disk_backup(server, tmp_path, partitioned):
    if partitioned and shutil.which("sfdisk") is None:
        pytest.skip("sfdisk is not installed")
    c, sfx = api(server), f"{server.backend}-{partitioned}"
    img, payload = ext4_image(tmp_path, "disk", partitioned=partitioned)
    disk = c.post("/inventory/disks", {"name": f"ext-{sfx}", "path": img})["disk"]
    v = c.post("/vaults", {"vault": {"name": f"ext-{sfx}", "billing": {
        "object_type": "disk", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"},
        "resources": [{"id": disk["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": v["id"]}})
    b = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
    task_ok(c, b["task_id"])

    root = cli(server, "backup", "ls", b["id"], "--json")
    assert root.code == 0, root.err
    vol = "/" if not partitioned else "/" + root.json()[0]["name"] + "/"
    if partitioned:  # a partition is listed as a directory with no time of its own: not "1970-01-01"
        shown = cli(server, "backup", "ls", b["id"])
        assert shown.code == 0 and "1970" not in shown.out and "--" in shown.out, shown.out
    etc = cli(server, "backup", "ls", b["id"], vol + "etc", "--json").json()
    assert [e["name"] for e in etc] == ["resolv.conf"] and etc[0]["size"] == len(payload)

    dest = tmp_path / "out"
    r = cli(server, "backup", "restore-files", b["id"], vol + "etc/resolv.conf", vol + "home", "--to", str(dest),
            "--wait", "--json")
    assert r.code == 0, r.err
    assert (dest / "resolv.conf").read_bytes() == payload
    assert (dest / "home" / "alice" / "notes.txt").read_text() == "remember the milk\n"
    r = cli(server, "backup", "ls", b["id"], vol + "no/such")
    assert r.code == 1 and "not" in r.err.lower()
