"""``python -m opencbr.engine``: the operator/benchmark CLI, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.engine import child_env, make_image, sha256_file

KEY = "11" * 32


def cli(store_url: str, *args: str, key: str = KEY, check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, "-m", "opencbr.engine", "--store", store_url, "--prefix", "vaults/v1",
                        "--key-hex", key, *args], capture_output=True, text=True, env=child_env(), timeout=120)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def test_cli_round_trip(tmp_path):
    url = (tmp_path / "store").as_uri()
    img = make_image(tmp_path / "d.img", 300, seed=41)
    assert json.loads(cli(url, "init").stdout)["encrypted"] is True
    b = json.loads(cli(url, "backup", img, "--id", "b1", "--meta", '{"name": "manualbk_x1y2"}').stdout)
    assert b["backup_id"] == "b1" and b["added_bytes"] > 0
    assert json.loads(cli(url, "show", "b1").stdout)["meta"] == {"name": "manualbk_x1y2"}
    assert json.loads(cli(url, "list").stdout) == {"backups": ["b1"]}
    assert json.loads(cli(url, "usage").stdout)["usage"] == b["added_bytes"]
    assert json.loads(cli(url, "verify", "b1").stdout)["ok"] is True
    cli(url, "restore", "b1", str(tmp_path / "r.img"))
    assert sha256_file(tmp_path / "r.img") == sha256_file(img)
    cli(url, "export", "b1", str(tmp_path / "e.raw"))
    assert sha256_file(tmp_path / "e.raw") == sha256_file(img)
    cli(url, "delete", "b1")
    g = json.loads(cli(url, "gc").stdout)
    assert g["packs_deleted"] > 0
    assert json.loads(cli(url, "usage").stdout)["usage"] == 0


def test_cli_errors_exit_non_zero_with_the_cbr_error_body(tmp_path):
    url = (tmp_path / "store").as_uri()
    cli(url, "init")
    p = cli(url, "usage", key="22" * 32, check=False)
    assert p.returncode == 1 and json.loads(p.stderr)["error_code"] == "BackupService.6001"
    p = cli(url, "restore", "missing", str(tmp_path / "x.img"), check=False)
    assert p.returncode == 1 and json.loads(p.stderr)["error_code"] == "BackupService.6002"
