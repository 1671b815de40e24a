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
