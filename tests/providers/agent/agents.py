"""Agent processes for the data-path tests: certificates from a test CA, the agent started as its own
process (listening on 127.0.0.1 or an address the test picks), and a ``connect`` for the provider."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
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
                 project: str = "p1", listen: str = "127.0.0.1:0", netns: str | None = None):
        self.auth, self.agent_id, self.dir = auth, agent_id, workdir
        workdir.mkdir(parents=True, exist_ok=True)
        cert, key = issue(auth.ca, auth.ca_key, agent_id, server=True, client=False)
        (workdir / "agent.pem").write_text(cert)
        (workdir / "agent.key").write_text(key)
        (workdir / "ca.pem").write_text(auth.ca)
        self.cert = cert
        cmd = [sys.executable, "-m", "tests.agent.tasks.stub", "--dir", str(workdir), "--project", project,
               "--listen", listen, *[a for r in roots for a in ("--root", str(r))]]
        if netns:
            cmd = ["ip", "netns", "exec", netns, *cmd]
        env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{REPO}"}
        self.proc = subprocess.Popen(cmd, env=env, cwd=str(REPO))
        port = workdir / "port"
        deadline = time.monotonic() + 20
        while not port.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the agent did not start")
            time.sleep(0.05)
        host = listen.rsplit(":", 1)[0]
        self.endpoint = f"{host}:{port.read_text()}"

    def connect(self, timeout: float = 10.0):
        ctx = service_client_context(self.auth.service_cert, self.auth.service_key, self.auth.ca)
        return connect(self.endpoint, ctx, expect_common_name=self.agent_id, expect_fingerprint=None, timeout=timeout)

    def peak_rss(self) -> int:
        """The agent process's peak resident set (VmHWM), in bytes."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

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
