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
    # the secret key is printed on the first start only; later starts say how to make a new one
    assert cfg["sk"] not in out2 and "cbr admin credential create" in out2


def _serve_env(tmp_path, port):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCBR_")}
    env.update(HOME=str(tmp_path / "home"), OPENCBR_DATA_DIR=str(tmp_path / "data"),
               OPENCBR_LISTEN=f"127.0.0.1:{port}", NO_PROXY="127.0.0.1,localhost", COLUMNS="200")
    return env


def test_busy_port_names_the_setting_that_moves_it(tmp_path):
    """Issue 12 item 10: not just "[Errno 98] address already in use"."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = subprocess.run([sys.executable, "-m", "opencbr.cli.main", "serve"], env=_serve_env(tmp_path, port),
                             capture_output=True, text=True, timeout=60)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    assert f"127.0.0.1:{port}" in text and "in use" in text and "OPENCBR_LISTEN" in text and "--listen" in text
    assert "Traceback" not in text


def test_damaged_catalog_says_what_is_wrong_and_how_to_recover(tmp_path):
    """Issue 11 item 13: a damaged SQLite catalog gives a clear message pointing to the rebuild, no traceback."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "catalog.db").write_bytes(os.urandom(64 * 1024))
    for command in (["serve"], ["worker", "--count", "1"], ["scheduler"]):
        out = subprocess.run([sys.executable, "-m", "opencbr.cli.main", *command],
                             env=_serve_env(tmp_path, free_port()), capture_output=True, text=True, timeout=60)
        text = out.stdout + out.stderr
        assert out.returncode != 0, text
        flat = " ".join(text.split())  # the message is wrapped to the terminal, at a place the path's length decides
        assert "catalog" in flat and "damaged" in flat and "cbr admin vault rebuild" in flat, text
        assert "Traceback" not in text, text


def test_make_run_says_what_it_is_doing(tmp_path):
    """Issue 12 item 10: `make run` shows a line per installation step instead of ~90 s of silence."""
    import shutil

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    # (what the Makefile's install step depends on: the C extensions' sources too)
    sources = [f"src/opencbr/engine/tree/{c}" for c in os.listdir(os.path.join(root, "src/opencbr/engine/tree")) if c.endswith(".c")]
    for name in ("Makefile", "pyproject.toml", "constraints.txt", "setup.py", *sources):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(os.path.join(root, name), tmp_path / name)
    out = subprocess.run(["make", "-n", "run"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    steps = [line for line in out.stdout.splitlines() if line.startswith('echo "==> ')]
    assert len(steps) >= 4 and "installing OpenCBR" in out.stdout and "starting OpenCBR" in out.stdout, out.stdout
