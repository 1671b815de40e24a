"""``python -m opencbr.engine.tree`` as a real subprocess: init, backup, incremental, ls, restore, verify."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from .conftest import assert_same_tree, build_tree


def cli(store, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, OPENCBR_MASTER_KEY="ab" * 32)
    p = subprocess.run([sys.executable, "-m", "opencbr.engine.tree", "--store", store.as_uri(), "--prefix", "v",
                        *args], env=env, capture_output=True, text=True, timeout=120)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_cli_end_to_end(tmp_path):
    store = tmp_path / "store"
    src = build_tree(tmp_path / "src")
    assert json.loads(cli(store, "init").stdout)["encrypted"] is True
    b1 = json.loads(cli(store, "backup", str(src), "--id", "b1", "--meta", '{"fs": "x"}').stdout)
    assert b1["files"] > 50 and b1["partial"] is False
    (src / "small.txt").write_text("changed\n")
    b2 = json.loads(cli(store, "backup", str(src), "--id", "b2", "--parent", "b1").stdout)
    assert b2["reused_files"] == b2["files"] - 1
    ls = json.loads(cli(store, "ls", "b2", "/docs").stdout)["entries"]
    assert {e["name"] for e in ls} >= {"text.md", "copy-of-text.md", "third-link.txt"}
    out = tmp_path / "out"
    r = json.loads(cli(store, "restore", "b2", str(out)).stdout)
    assert r["files"] > 50
    assert_same_tree(src, out)
    assert json.loads(cli(store, "verify", "b2").stdout)["ok"] is True
    assert json.loads(cli(store, "show", "b1").stdout)["meta"] == {"fs": "x"}
    bad = cli(store, "restore", "b2", str(out), check=False)  # not empty
    assert bad.returncode == 1 and json.loads(bad.stderr)["error_code"] == "BackupService.6001"
    missing = cli(store, "ls", "b2", "/no/such", check=False)
    assert missing.returncode == 1 and json.loads(missing.stderr)["error_code"] == "BackupService.6002"
