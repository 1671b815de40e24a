"""Agent processes for the data-path tests: certificates from a test CA, the agent program
(``python -m opencbr.agent run`` with a configuration written here, as enrolment writes it) in its own
process, listening on 127.0.0.1 or an address the test picks, and a ``connect`` for the provider."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from opencbr.agentlink.certs import issue, new_authority
from opencbr.agentlink.client import connect
from opencbr.agentlink.tls import SERVICE_CN, service_client_context

REPO = Path(__file__).resolve().parents[3]


@dataclass
class Authority:
    ca: str
    ca_key: str
    service_cert: str
    service_key: str

    @classmethod
    def new(cls) -> "Authority":
        ca, ca_key = new_authority()
        cert, key = issue(ca, ca_key, SERVICE_CN, server=False, client=True)
        return cls(ca, ca_key, cert, key)


class AgentProcess:
    """One agent: its own process, roots, certificate (CN = agent_id)."""

    def __init__(self, auth: Authority, workdir: Path, roots: list[Path], *, agent_id: str = "agent-1",
                 project: str = "p1", listen: str = "127.0.0.1:0", netns: str | None = None,
                 bandwidth_limit: int = 0, hooks: dict | None = None, max_tasks: int = 4,
                 devices: list[str] | None = None):
        self.auth, self.agent_id, self.project, self.dir = auth, agent_id, project, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        cert, key = issue(auth.ca, auth.ca_key, agent_id, server=True, client=False)
        self.cert = cert
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}
        prefix = ["ip", "netns", "exec", netns] if netns else []
        self.log = open(workdir / "agent.log", "ab")  # noqa: SIM115 - the agent's stderr, for its whole life
        config = workdir / "etc" / "agent.json"
        config.parent.mkdir(mode=0o700, exist_ok=True)
        config.write_text(json.dumps({
            "agent_id": agent_id, "project_id": project, "api_endpoint": "http://127.0.0.1:9",
            "listen": listen, "advertise": "", "roots": [str(r) for r in roots], "devices": devices or [],
            "key_pem": key, "cert_pem": cert, "ca_pem": auth.ca, "bandwidth_limit": bandwidth_limit,
            "max_tasks": max_tasks, "state_dir": str(workdir / "state"), "hooks": hooks or {}}))
        config.chmod(0o600)
        cmd = [sys.executable, "-m", "opencbr.agent", "--config", str(config), "run"]
        self.proc = subprocess.Popen([*prefix, *cmd], env=env, cwd=str(REPO), stdout=subprocess.PIPE,
                                     stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("listening on"):
            self.proc.kill()
            raise RuntimeError(f"the agent did not start: {line} (see {workdir / 'agent.log'})")
        self.endpoint = line.split()[-1]

    def connect(self, timeout: float = 10.0, *, seal: bool = True):
        """A data task's channel to the agent, as a worker opens one (sealed once authenticated)."""
        ctx = service_client_context(self.auth.service_cert, self.auth.service_key, self.auth.ca)
        return connect(self.endpoint, ctx, expect_common_name=self.agent_id, expect_fingerprint=None, timeout=timeout,
                       seal={"project_id": self.project} if seal else None)

    def peak_rss(self) -> int:
        """The agent process's peak resident set (VmHWM), in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def rss(self) -> int:
        """The agent process's resident set now (VmRSS), in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0

    def reset_peak_rss(self) -> None:
        """Start VmHWM again from the current RSS (``clear_refs`` 5, Linux 4.0+): the next
        :meth:`peak_rss` is the peak since now."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()
