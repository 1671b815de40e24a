"""A real S3 server (moto_server from moto[server]) on a free loopback port, as a subprocess.

Tests get one per session through the ``moto_url`` fixture of ``tests/conftest.py``, and a fresh bucket
per store through ``s3_store_url``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Callable

from tests.support.server import free_port


def _moto_command(port: int) -> list[str]:
    exe = Path(sys.executable).with_name("moto_server")
    if exe.exists():
        return [str(exe), "-H", "127.0.0.1", "-p", str(port)]
    found = shutil.which("moto_server")
    if found:
        return [found, "-H", "127.0.0.1", "-p", str(port)]
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


def start_moto_server(timeout: float = 30.0) -> tuple[str, Callable[[], None]]:
    """Start moto_server; return (endpoint_url, stop). ``stop()`` terminates exactly that process."""
    port = free_port()
    env = dict(os.environ)
    env.setdefault("AWS_ACCESS_KEY_ID", "test")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "test")
    proc = subprocess.Popen(
        _moto_command(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=1):
                break
        except Exception:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto_server did not come up") from None
            time.sleep(0.1)

    def stop() -> None:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    return url, stop


def s3_store_url(moto_url: str, prefix: str = "objects") -> str:
    """An object-store URL on a new, empty bucket of the moto server at ``moto_url``."""
    return (f"s3://b-{uuid.uuid4().hex[:12]}/{prefix}?endpoint_url={moto_url}&region=us-east-1"
            "&access_key=test&secret_key=test")
