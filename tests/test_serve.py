"""What `make run` does: serve prints the URL and bootstrap credentials, writes the CLI configuration
(mode 0600) so `cbr` works at once, and the official SDK works against it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import tomllib

import httpx
from huaweicloudsdkcbr.v1 import ListVaultRequest

from tests.support.clients import sdk
from tests.support.server import Creds, free_port


def test_serve_bootstraps_and_writes_client_config(tmp_path):
    port = free_port()
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCBR_")}
    env.update(HOME=str(home), OPENCBR_DATA_DIR=str(tmp_path / "data"), OPENCBR_LISTEN=f"127.0.0.1:{port}",
               NO_PROXY="127.0.0.1,localhost", COLUMNS="200")
    proc = subprocess.Popen([sys.executable, "-m", "opencbr.cli.main", "serve"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        cfg_path = home / ".config" / "opencbr" / "config.toml"
        deadline = time.time() + 30
        while time.time() < deadline and not cfg_path.exists():
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.1)
        assert cfg_path.exists(), "serve did not write the CLI configuration"
        assert stat.S_IMODE(os.stat(cfg_path).st_mode) == 0o600
        cfg = tomllib.loads(cfg_path.read_text())
        assert cfg["endpoint"] == f"http://127.0.0.1:{port}" and len(cfg["ak"]) == 20 and cfg["project_id"]
        assert httpx.get(cfg["endpoint"] + "/health", trust_env=False).status_code == 200
        # the CLI works with nothing but that file
        out = subprocess.run([sys.executable, "-m", "opencbr.cli.main", "whoami", "--json"], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert '"role": "admin"' in out.stdout
        # ... and so does the official SDK with those credentials
        class Srv:
            url = cfg["endpoint"]
            admin = Creds(cfg["ak"], cfg["sk"], cfg["project_id"])
        assert sdk(Srv).list_vault(ListVaultRequest()).count == 0
        assert (tmp_path / "data" / "catalog.db").exists() and (tmp_path / "data" / "master.key").exists()
        assert stat.S_IMODE(os.stat(tmp_path / "data" / "master.key").st_mode) == 0o600
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    # the banner shows what a new user needs
    for text in ("URL", f"127.0.0.1:{port}", "Project ID", cfg["ak"], cfg["sk"]):
        assert text in out, out
    # a second start finds the same bootstrap account instead of creating another
    proc = subprocess.Popen([sys.executable, "-m", "opencbr.cli.main", "serve"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if httpx.get(cfg["endpoint"] + "/health", trust_env=False).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        time.sleep(0.5)
    finally:
        proc.terminate()
        out2, _ = proc.communicate(timeout=20)
    assert cfg["ak"] in out2 and tomllib.loads(cfg_path.read_text())["ak"] == cfg["ak"]
