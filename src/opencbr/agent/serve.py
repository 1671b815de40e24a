"""``opencbr-agent run``: serve the service's requests until SIGTERM (or a ``revoke``).

Every connection is mutual TLS from ``agentlink``: the client must present a certificate of the CA
pinned at enrolment whose common name is the service's (:data:`agentlink.tls.SERVICE_CN`). Its first
message is a request ``{"op": ..., "project_id": ..., ...}``; a request for another project than the
agent's is refused (``wrong_project``), whatever certificate it came with. At most ``max_tasks`` data
operations run at once; one more is answered ``busy`` (the service retries later).
"""

from __future__ import annotations

import importlib
import logging
import signal
import threading
from datetime import UTC, datetime

from opencbr.agent import VERSION, consistency, inventory
from opencbr.agent import config as agent_config
from opencbr.agent.config import AgentConfig, parse_host_port
from opencbr.agent.confinement import Confinement, PathSwapped
from opencbr.agent.context import AgentError, TaskContext
from opencbr.agentlink import tls
from opencbr.agentlink.channel import Channel, LinkError, error_answer
from opencbr.agentlink.server import Peer, Server

log = logging.getLogger("opencbr.agent")

#: Operations that read or write data (the rest answer at once and are not counted against ``max_tasks``).
CONTROL_OPS = ("ping", "inventory", "check", "revoke")


def data_operations() -> dict:
    """``agent.tasks.OPERATIONS`` (op -> fn(ctx, channel, header, payload) -> dict), or none yet."""
    try:
        return dict(importlib.import_module("opencbr.agent.tasks").OPERATIONS)
    except (ImportError, AttributeError):
        return {}


def _hooks_check(header: dict) -> list:
    """App-consistency readiness (agent.hooks), when that module is installed."""
    try:
        hooks = importlib.import_module("opencbr.agent.hooks")
    except ImportError:
        return []
    check = getattr(hooks, "check", None)
    return list(check(header)) if callable(check) else []


class Agent:
    def __init__(self, config: AgentConfig, config_path: str):
        self.config = config
        self.config_path = config_path
        self.confinement = Confinement(config.roots, config.devices)
        self.consistency = consistency.Consistency(config.state_dir, log)
        self.stopped = threading.Event()
        self._slots = threading.BoundedSemaphore(max(1, config.max_tasks))
        self.server: Server | None = None

    # -- the process
    def start(self) -> Server:
        if not self.config.enrolled:
            raise agent_config.ConfigError("this agent has no certificate (not enrolled, or revoked): "
                                           "enrol it again with opencbr-agent register")
        consistency.clean_leftovers(self.config.state_dir)
        context = tls.agent_server_context(self.config.cert_pem, self.config.key_pem, self.config.ca_pem)
        self.server = Server(parse_host_port(self.config.listen), context, self.handle,
                             max_connections=max(16, 4 * self.config.max_tasks))
        self.server.start()
        log.info("agent %s (project %s) listening on %s:%s; roots %s", self.config.agent_id, self.config.project_id,
                 *self.server.address, self.config.roots)
        return self.server

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT or a ``revoke``."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopped.set())
        self.start()
        print(f"listening on {self.server.address[0]}:{self.server.address[1]}", flush=True)
        while not self.stopped.wait(1.0):
            pass
        self.server.stop()
        log.info("agent stopped")
        return 0

    # -- one request
    def handle(self, channel: Channel, header: dict, payload: memoryview, peer: Peer) -> None:
        op = str(header.get("op", ""))
        if peer.common_name != tls.SERVICE_CN:
            log.warning("refused %s from %s: certificate %r is not the service's", op, peer.address, peer.common_name)
            channel.send(error_answer("forbidden", "only the service may use this agent"))
            return
        if header.get("project_id") != self.config.project_id:
            log.warning("refused %s from %s: project %r is not this agent's", op, peer.address, header.get("project_id"))
            channel.send(error_answer("wrong_project", "this agent belongs to another project"))
            return
        try:
            answer = self._dispatch(op, channel, header, payload)
        except AgentError as e:
            answer = error_answer(e.code, e.message)
        except PathSwapped as e:
            answer = error_answer("refused", str(e))
        except FileNotFoundError as e:
            answer = error_answer("not_found", f"{e.filename or ''}: {e.strerror}")
        except LinkError:
            raise
        except Exception as e:  # noqa: BLE001 - logged here with its traceback; the wire gets one line
            log.exception("%s failed", op)
            answer = error_answer("internal", f"{type(e).__name__}: {e}")
        channel.send(answer)
        if op == "revoke" and answer.get("ok"):
            self.stopped.set()

    def _dispatch(self, op: str, channel: Channel, header: dict, payload: memoryview) -> dict:
        if op == "ping":
            return {"ok": True, "agent_id": self.config.agent_id, "version": VERSION,
                    "time": datetime.now(UTC).isoformat()}
        if op == "inventory":
            found = inventory.inventory(self.confinement, header.get("paths") or [],
                                        api_host=_host_of(self.config.api_endpoint))
            return {"ok": True, **found, "version": VERSION, "roots": self.config.roots}
        if op == "check":
            return {"ok": True, "hooks": _hooks_check(header), "version": VERSION}
        if op == "revoke":
            self._forget_certificate()
            return {"ok": True}
        fn = data_operations().get(op)
        if fn is None:
            raise AgentError("unknown_op", f"this agent (version {VERSION}) has no operation {op!r}")
        if not self._slots.acquire(blocking=False):
            raise AgentError("busy", f"this agent runs {self.config.max_tasks} tasks already; retry later")
        try:
            return {"ok": True, "result": fn(self._task_context(channel, header), channel, header, payload)}
        finally:
            self._slots.release()

    def _task_context(self, channel: Channel, header: dict) -> TaskContext:
        limits = [x for x in (self.config.bandwidth_limit, header.get("bandwidth_limit")) if x]
        limit = float(min(limits)) if limits else None
        channel.limit_bytes_per_second = limit
        return TaskContext(self.config, self.confinement, self.consistency, log, limit,
                           str(header.get("request_id", "")))

    def _forget_certificate(self) -> None:
        """Revoked: drop the key and certificates (the identity stays, for ``status``) and stop serving."""
        log.warning("revoked by the service: forgetting this agent's certificate and stopping")
        self.config.key_pem = self.config.cert_pem = self.config.ca_pem = ""
        agent_config.save(self.config, self.config_path)


def _host_of(url: str) -> str | None:
    from urllib.parse import urlparse

    try:
        return urlparse(url).hostname
    except ValueError:
        return None


def serve(config_path: str) -> int:
    cfg = agent_config.load(config_path)
    return Agent(cfg, config_path).run()

