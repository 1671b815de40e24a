"""``python -m opencbr.engine``: the engine's debugging and benchmark CLI, run as a real subprocess, on
disk images (``disk ...``), trees of files (``tree ...``) and the repository both share."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.support.engine import child_env, make_image, sha256_file
from tests.support.engine_tree import assert_same_tree, build_tree

KEY = "11" * 32


def cli(store_url: str, *args: str, key: str | None = KEY, check: bool = True) -> subprocess.CompletedProcess:
    """``key=None``: the key comes from ``$OPENCBR_MASTER_KEY``."""
    key_args = ["--key-hex", key] if key else []
    env = child_env() if key else dict(child_env(), OPENCBR_MASTER_KEY=KEY)
    p = subprocess.run([sys.executable, "-m", "opencbr.engine", "--store", store_url, "--prefix", "vaults/v1",
                        *key_args, *args], capture_output=True, text=True, env=env, timeout=120)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_disk_round_trip(tmp_path):
    url = (tmp_path / "store").as_uri()
    img = make_image(tmp_path / "d.img", 300, seed=41)
    assert json.loads(cli(url, "init").stdout)["encrypted"] is True
    b = json.loads(cli(url, "disk", "backup", img, "--id", "b1", "--meta", '{"name": "manualbk_x1y2"}').stdout)
    assert b["backup_id"] == "b1" and b["added_bytes"] > 0
    assert json.loads(cli(url, "show", "b1").stdout)["meta"] == {"name": "manualbk_x1y2"}
    assert json.loads(cli(url, "list").stdout) == {"backups": ["b1"]}
    assert json.loads(cli(url, "usage").stdout)["usage"] == b["added_bytes"]
    assert json.loads(cli(url, "disk", "verify", "b1").stdout)["ok"] is True
    cli(url, "disk", "restore", "b1", str(tmp_path / "r.img"))
    assert sha256_file(tmp_path / "r.img") == sha256_file(img)
    cli(url, "disk", "export", "b1", str(tmp_path / "e.raw"))
    assert sha256_file(tmp_path / "e.raw") == sha256_file(img)
    cli(url, "delete", "b1")
    g = json.loads(cli(url, "gc").stdout)
    assert g["packs_deleted"] > 0
    assert json.loads(cli(url, "usage").stdout)["usage"] == 0


def test_errors_exit_non_zero_naming_the_engine_error(tmp_path):
    url = (tmp_path / "store").as_uri()
    cli(url, "init")
    p = cli(url, "usage", key="22" * 32, check=False)
    assert p.returncode == 1 and json.loads(p.stderr)["error"] == "InvalidArgument"
    p = cli(url, "disk", "restore", "missing", str(tmp_path / "x.img"), check=False)
    assert p.returncode == 1 and json.loads(p.stderr)["error"] == "Missing"


def test_a_parent_that_is_not_in_the_repository_is_an_error_not_a_full_backup(tmp_path):
    url = (tmp_path / "store").as_uri()
    img = make_image(tmp_path / "d.img", 64, seed=8)
    src = build_tree(tmp_path / "src")
    cli(url, "init")
    for args in (("disk", "backup", img), ("tree", "backup", str(src))):
        p = cli(url, *args, "--id", "b1", "--parent", "no-such-backup", check=False)
        assert p.returncode == 1 and json.loads(p.stderr)["error"] == "Missing", p.stderr
        assert "no-such-backup" in json.loads(p.stderr)["error_msg"]
        p = cli(url, *args, "--id", "b1", "--parent", "../elsewhere", check=False)
        assert p.returncode == 1 and json.loads(p.stderr)["error"] == "InvalidArgument", p.stderr
    assert json.loads(cli(url, "list").stdout) == {"backups": []}


def test_a_verify_that_finds_damage_exits_3(tmp_path):
    store = tmp_path / "store"
    img = make_image(tmp_path / "d.img", 64, seed=7)
    cli(store.as_uri(), "init", "--no-encrypt")
    cli(store.as_uri(), "disk", "backup", img, "--id", "b1")
    for pack in (p for p in (store / "vaults" / "v1").rglob("*") if p.is_file() and "data" in p.parts):
        with open(pack, "r+b") as f:
            f.seek(64)
            f.write(os.urandom(64))
    p = cli(store.as_uri(), "disk", "verify", "b1", check=False)
    assert p.returncode == 3 and json.loads(p.stdout)["ok"] is False, p.stdout + p.stderr


def test_tree_end_to_end(tmp_path):
    url = (tmp_path / "store").as_uri()
    src = build_tree(tmp_path / "src")
    assert json.loads(cli(url, "init").stdout)["encrypted"] is True
    b1 = json.loads(cli(url, "tree", "backup", str(src), "--id", "b1", "--meta", '{"fs": "x"}', key=None).stdout)
    assert b1["files"] > 50 and b1["partial"] is False
    (src / "small.txt").write_text("changed\n")
    b2 = json.loads(cli(url, "tree", "backup", str(src), "--id", "b2", "--parent", "b1").stdout)
    assert b2["reused_files"] == b2["files"] - 1
    ls = json.loads(cli(url, "ls", "b2", "/docs").stdout)["entries"]
    assert {e["name"] for e in ls} >= {"text.md", "copy-of-text.md", "third-link.txt"}
    out = tmp_path / "out"
    r = json.loads(cli(url, "tree", "restore", "b2", str(out)).stdout)
    assert r["files"] > 50
    assert_same_tree(src, out)
    assert json.loads(cli(url, "tree", "verify", "b2").stdout)["ok"] is True
    assert json.loads(cli(url, "show", "b1").stdout)["meta"] == {"fs": "x"}
    bad = cli(url, "tree", "restore", "b2", str(out), check=False)  # not empty
    assert bad.returncode == 1 and json.loads(bad.stderr)["error"] == "InvalidArgument"
    missing = cli(url, "ls", "b2", "/no/such", check=False)
    assert missing.returncode == 1 and json.loads(missing.stderr)["error"] == "Missing"
