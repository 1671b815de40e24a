"""`cbr backup ...` and `cbr disk create-from-backup` as a user runs them, with --wait and --json."""

from __future__ import annotations

import os

from tests.support.clients import cli
from tests.support.disks import MiB, make_image, mutate, sha256


def ok(r):
    assert r.code == 0, f"exit {r.code}\nstdout: {r.out}\nstderr: {r.err}"
    return r


def test_backup_commands(server, tmp_path):
    sfx = server.backend
    img = make_image(tmp_path / "c.img", 4 * MiB, seed=41)
    disk = ok(cli(server, "disk", "register", "--name", f"cli-b-{sfx}", "--path", img, "--json")).json()
    vault = ok(cli(server, "vault", "create", "--name", f"cli-b-{sfx}", "--type", "disk", "--size", "10",
                   "--resource", disk["id"], "--json")).json()
    out = ok(cli(server, "backup", "create", vault["id"], "--name", "cli-first", "--wait", "--json")).json()
    (b1,) = out["backups"]
    assert b1["status"] == "available" and b1["name"] == "cli-first" and b1["logical_bytes"] == 4 * MiB
    h1 = sha256(img)
    mutate(img, seed=8)
    b2 = ok(cli(server, "backup", "create", f"cli-b-{sfx}", "--wait", "--json")).json()["backups"][0]
    assert b2["incremental"] is True and b2["added_bytes"] < b1["added_bytes"]
    h2 = sha256(img)

    listed = ok(cli(server, "backup", "list", "--vault", vault["id"], "--json")).json()
    assert [b["id"] for b in listed] == [b2["id"], b1["id"]]  # newest first
    assert "cli-first" in ok(cli(server, "backup", "list", "--vault", vault["id"])).out
    shown = ok(cli(server, "backup", "show", b1["id"], "--json")).json()
    assert shown["id"] == b1["id"] and shown["consistency"]["method"] == "stopped"

    ok(cli(server, "backup", "restore", b1["id"], "--disk", disk["id"], "--wait", "--json"))
    assert sha256(img) == h1

    verify = ok(cli(server, "backup", "verify", b2["id"], "--json")).json()
    assert verify["ok"] is True and verify["disks"][0]["chunks_checked"] > 0

    exported = tmp_path / "export.img"
    ok(cli(server, "backup", "export", b2["id"], "-o", str(exported), "--json"))
    assert sha256(exported) == h2
    assert os.stat(exported).st_blocks * 512 < 4 * MiB  # zero regions stayed holes

    new = ok(cli(server, "disk", "create-from-backup", b2["id"], "--name", f"cli-new-{sfx}",
                 "--path", str(tmp_path / "new.img"), "--size", str(5 * MiB), "--wait", "--json")).json()
    assert new["status"] == "available" and new["size_bytes"] == 5 * MiB
    with open(tmp_path / "new.img", "rb") as f:
        import hashlib
        assert hashlib.sha256(f.read(4 * MiB)).hexdigest() == h2
        assert f.read() == bytes(MiB)

    r = cli(server, "disk", "create-from-backup", b2["id"], "--name", "x", "--path", str(tmp_path / "small.img"),
            "--size", str(MiB))
    assert r.code == 1 and "at least as large" in r.err

    ok(cli(server, "backup", "delete", b1["id"], "--wait", "--yes"))
    r = cli(server, "backup", "show", b1["id"])
    assert r.code == 1 and "not found" in r.err
    ok(cli(server, "backup", "restore", b2["id"], "--disk", disk["id"], "--wait"))
    assert sha256(img) == h2
