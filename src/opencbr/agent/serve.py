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
import os
import re
import signal
import threading
import time
from datetime import UTC, datetime

from opencbr.agent import VERSION, consistency, inventory, made
from opencbr.agent import config as agent_config
from opencbr.agent.config import AgentConfig, parse_host_port
from opencbr.agent.confinement import Confinement, PathSwapped
from opencbr.agent.context import AgentError, TaskContext
from opencbr.agentlink import tls
from opencbr.agentlink.channel import Channel, LinkError, RemoteError, error_answer
from opencbr.agentlink.server import Peer, Server
from opencbr.engine.tree.memory import limit_arenas
from opencbr.system.heap import collect_task_garbage

log = logging.getLogger("opencbr.agent")

#: How long running tasks get to answer (cancelled) when the agent is stopped.
STOP_GRACE_SECONDS = 10.0

#: The requests that run no task (the service's heartbeat and checks: small, frequent).
CONTROL_OPS = frozenset({"ping", "inventory", "check", "revoke"})


def _optional(module: str):
    """``module`` if this agent has it; an import error inside it is an error, not an absence."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        return None


def data_operations() -> dict:
    """``agent.tasks.OPERATIONS`` (op -> fn(ctx, channel, header, payload) -> dict), or none yet."""
    tasks = _optional("opencbr.agent.tasks")
    return dict(tasks.OPERATIONS) if tasks is not None else {}


def _hooks_check(hooks_config: dict) -> dict:
    """App-consistency readiness: ``agent.hooks.check(agent.hooks.discover(<the configuration's hooks>))``
    when this agent has the hooks: ``{"hooks": [...]}``."""
    hooks = _optional("opencbr.agent.hooks")
    if hooks is None or not callable(getattr(hooks, "check", None)) or not callable(getattr(hooks, "discover", None)):
        return {"hooks": []}
    return {"hooks": list(hooks.check(hooks.discover(hooks_config or {})))}


def _hooks_readiness(hooks_config: dict) -> dict:
    """Whether the applications can be quiesced, as last checked (``agent.hooks.readiness``: checked in
    the background, the heartbeat never waits for a database)."""
    readiness = _optional("opencbr.agent.hooks.readiness")
    return readiness.readiness(hooks_config) if readiness is not None else {"state": "unsupported"}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def error_code(e: BaseException) -> str | None:
    """The code an operation's exception is answered with, or None for an unexpected one (``internal``,
    logged with its traceback): the agent's and the peer's codes, refusals, missing paths, and the
    engine's own errors by their class name (``BadRequest`` -> ``bad_request``)."""
    if isinstance(e, (AgentError, RemoteError)):
        return e.code
    if isinstance(e, PathSwapped):
        return "refused"
    if isinstance(e, FileNotFoundError):
        return "not_found"
    if isinstance(e, FileExistsError):  # (a new disk image is never made over what is at its path)
        return "exists"
    if isinstance(e, PermissionError):
        return "denied"
    if type(e).__module__.startswith("opencbr."):
        return _snake(type(e).__name__)
    return None


class Agent:
    def __init__(self, config: AgentConfig, config_path: str, operations: dict | None = None):
        """``operations``: the data operations (op -> fn); by default ``agent.tasks.OPERATIONS``."""
        self.config = config
        self._operations = operations
        self.config_path = config_path
        self.confinement = Confinement(config.roots, config.devices)
        self.consistency = consistency.Consistency(config.state_dir, log)
        self.stopped = threading.Event()
        self._slots = threading.BoundedSemaphore(max(1, config.max_tasks))
        self._lock = threading.Lock()
        self._running: set[threading.Event] = set()  # the cancel events of the running data operations
        self.server: Server | None = None

    # -- the process
    def start(self) -> Server:
        if not self.config.enrolled:
            raise agent_config.ConfigError("this agent has no certificate (not enrolled, or revoked): "
                                           "enrol it again with opencbr-agent register")
        consistency.clean_leftovers(self.config.state_dir)
        for path in made.discard_partial_images(self.confinement, made.made_dirs(self.config.state_dir)):
            log.warning("removed %s: a new disk image an earlier run of this agent did not finish", path)
        if self._operations is None:
            # the engine's modules now, not on the first task: compiled from source where no bytecode is
            # written, they cost ~0.2 s of CPU before that task read anything (its wall time). One that
            # cannot be imported (a dependency missing) leaves the agent serving pings and inventories;
            # each data task then fails with the import's error, as before.
            try:
                data_operations()
            except ImportError as e:
                log.warning("the data operations cannot be loaded: %s", e)
        context = tls.agent_server_context(self.config.cert_pem, self.config.key_pem, self.config.ca_pem)
        self.server = Server(parse_host_port(self.config.listen), context, self.handle,
                             max_connections=max(16, 4 * self.config.max_tasks))
        self.server.start()
        log.info("agent %s (project %s) listening on %s:%s; roots %s", self.config.agent_id, self.config.project_id,
                 *self.server.address, self.config.roots)
        try:
            state_below_root = self.confinement.below_root(self.config.state_dir) is not None
        except PathSwapped:
            state_below_root = False
        if state_below_root:
            log.warning("the state directory %s lies below a root: a restore can put entries in it (its records "
                        "are read and written without following links); choose --state-dir outside the roots",
                        self.config.state_dir)
        for need in inventory.access()["needs"]:
            log.warning("running as uid %s: %s", os.geteuid(), need)
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
        self._cancel_running(grace=STOP_GRACE_SECONDS)
        log.info("agent stopped")
        return 0

    def _cancel_running(self, grace: float) -> None:
        """Ask running tasks to stop (their ``ctx.cancel``) and give them ``grace`` seconds to answer."""
        with self._lock:
            running = list(self._running)
        for cancel in running:
            cancel.set()
        end = time.monotonic() + grace
        while time.monotonic() < end:
            with self._lock:
                if not self._running:
                    return
            time.sleep(0.1)

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
            self._answer(op, channel, header, payload)
        finally:
            if op not in CONTROL_OPS:
                collect_task_garbage()  # (once answered: the service does not wait for it)

    def _answer(self, op: str, channel: Channel, header: dict, payload: memoryview) -> None:
        try:
            answer = self._dispatch(op, channel, header, payload)
        except LinkError:
            raise
        except Exception as e:  # noqa: BLE001 - logged here; the wire gets a code and one line, never a traceback
            code = error_code(e)
            if code is None:
                log.exception("%s failed", op)
                code = "internal"
            else:
                log.warning("%s: %s: %s", op, code, e)
            message = e.message if isinstance(e, (AgentError, RemoteError)) else str(e)
            answer = error_answer(code, message if code != "internal" else f"{type(e).__name__}: {e}")
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
            return {"ok": True, **found, "version": VERSION, "roots": self.config.roots,
                    # asked only where the service needs it (an older service does not say: asked)
                    "app_consistency": (_hooks_readiness(self.config.hooks) if header.get("readiness", True)
                                        else {"state": "not_asked"})}
        if op == "check":
            return {"ok": True, **_hooks_check(self.config.hooks), "version": VERSION}
        if op == "revoke":
            self._forget_certificate()
            return {"ok": True}
        fn = (self._operations if self._operations is not None else data_operations()).get(op)
        if fn is None:
            raise AgentError("unknown_op", f"this agent (version {VERSION}) has no operation {op!r}")
        if not self._slots.acquire(blocking=False):
            raise AgentError("busy", f"this agent runs {self.config.max_tasks} tasks already; retry later")
        cancel = threading.Event()
        with self._lock:
            self._running.add(cancel)
        try:
            return {"ok": True, "result": fn(self._task_context(channel, header, cancel), channel, header, payload)}
        finally:
            with self._lock:
                self._running.discard(cancel)
            self._slots.release()

    def _task_context(self, channel: Channel, header: dict, cancel: threading.Event) -> TaskContext:
        limits = [x for x in (self.config.bandwidth_limit, header.get("bandwidth_limit")) if x]
        limit = float(min(limits)) if limits else None
        channel.limit_bytes_per_second = limit
        return TaskContext(self.config, self.confinement, self.consistency, log, limit,
                           str(header.get("request_id", "")), cancel)

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


#: glibc malloc arenas of the agent process (docs/agents.md, "Memory"): its task threads share them
#: instead of taking one each; a disk backup's peak RSS went from ~135 to ~125 MB.
MALLOC_ARENAS = 2


def serve(config_path: str) -> int:
    cfg = agent_config.load(config_path)
    limit_arenas(MALLOC_ARENAS)  # before any task thread
    return Agent(cfg, config_path).run()

