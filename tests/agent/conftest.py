"""The agent as the host runs it: the ``opencbr-agent`` command in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from opencbr.agentlink import certs, tls
from tests.agent.enrol_server import EnrolService

SRC = Path(__file__).resolve().parents[2] / "src"


def agent_env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def agent_cmd(config: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "opencbr.agent", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=timeout, env=agent_env())


class AgentProcess:
    """``opencbr-agent run`` in the background, until stopped (SIGTERM)."""

    def __init__(self, config: Path):
        self.proc = subprocess.Popen([sys.executable, "-m", "opencbr.agent", "--config", str(config), "run"],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=agent_env())
        line = self.proc.stdout.readline()
        if not line.startswith("listening on"):
            self.proc.kill()
            raise RuntimeError(f"the agent did not start: {line}{self.proc.stderr.read()}")
        self.endpoint = line.split()[-1]

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            _, err = self.proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        return err


@pytest.fixture
def enrol_service():
    svc = EnrolService()
    yield svc
    svc.close()


@pytest.fixture
def service_context(enrol_service):
    """The service's client side: a client certificate of the enrolment CA (CN opencbr-service)."""
    cert, key = certs.issue(enrol_service.ca, enrol_service.ca_key, tls.SERVICE_CN, server=False, client=True)
    return tls.service_client_context(cert, key, enrol_service.ca)


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)


@pytest.fixture
def loop_device(tmp_path):
    """A 32 MiB loop device over an image in tmp_path (root and a kernel with loop devices only)."""
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    image = tmp_path / "loop.img"
    with open(image, "wb") as f:
        f.truncate(32 << 20)
    done = _run("losetup", "-f", "--show", str(image))
    if done.returncode != 0:
        pytest.skip(f"no loop device here: {done.stderr.strip()}")
    dev = done.stdout.strip()
    yield dev
    _run("losetup", "-d", dev)


@pytest.fixture
def mounted_loop(tmp_path, loop_device):
    """(device, mount point) of an ext4 file system on a loop device."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if _run("mkfs.ext4", "-q", loop_device).returncode != 0 or _run("mount", loop_device, str(mnt)).returncode != 0:
        pytest.skip("cannot make and mount an ext4 file system here")
    yield loop_device, str(mnt)
    _run("fsfreeze", "-u", str(mnt))
    _run("umount", str(mnt))
