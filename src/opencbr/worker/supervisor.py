"""Worker processes beside the API: ``opencbr serve`` starts ``workers`` of them and keeps them running.

The data plane (backups, restores, GC, verify) runs in these processes, never in the API's: a backup
holds a core and the interpreter lock for minutes, and the API must answer meanwhile. Each child is
``cbr worker --count 1 --supervised`` with the parent's settings in its environment. The supervisor
restarts a child that dies (a crash or a kill: its task is retried by the lease rules), with a growing
pause when one keeps dying at once, and stops them all in order (SIGTERM: they hand their tasks back).
A child whose parent dies gets SIGTERM from the kernel (``PR_SET_PDEATHSIG``) and stops in order too.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, fields

from opencbr.config import Settings
from opencbr.worker.runner import STOP_GRACE_SECONDS

log = logging.getLogger("opencbr.supervisor")

#: A child that lives shorter than this before dying counts as failing at start (back off).
QUICK_DEATH_SECONDS = 5.0
MAX_BACKOFF_SECONDS = 30.0


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``OPENCBR_*`` variables that make a child load exactly these settings."""
    env = {}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        var = "OPENCBR_MASTER_KEY" if f.name == "master_key_hex" else "OPENCBR_" + f.name.upper()
        if isinstance(value, tuple):
            value = ",".join(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        env[var] = str(value)
    return env


@dataclass
class Child:
    slot: int
    proc: subprocess.Popen | None = None
    started: float = 0.0
    quick_deaths: int = 0
    restart_at: float = 0.0


class WorkerProcesses:
    def __init__(self, settings: Settings, count: int):
        self.settings = settings
        self.children = [Child(i) for i in range(count)]
        self.env = {**os.environ, **settings_env(settings)}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for child in self.children:
            self._spawn(child)
        self._thread = threading.Thread(target=self._watch, name="worker-supervisor", daemon=True)
        self._thread.start()

    def _spawn(self, child: Child) -> None:
        cmd = [sys.executable, "-m", "opencbr.cli.main", "worker", "--count", "1", "--supervised"]
        child.proc = subprocess.Popen(cmd, env=self.env, stdin=subprocess.DEVNULL)
        child.started = time.monotonic()
        log.info("worker process %d started (pid %d)", child.slot, child.proc.pid)

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self.children if c.proc is not None and c.proc.poll() is None]

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            with self._lock:
                if self._stop.is_set():
                    return
                for child in self.children:
                    self._check(child)

    def _check(self, child: Child) -> None:
        now = time.monotonic()
        if child.proc is not None:
            code = child.proc.poll()
            if code is None:
                return
            lived = now - child.started
            child.quick_deaths = child.quick_deaths + 1 if lived < QUICK_DEATH_SECONDS else 0
            pause = min(MAX_BACKOFF_SECONDS, 2 ** child.quick_deaths - 1) if child.quick_deaths else 0
            log.warning("worker process %d (pid %d) exited with %s after %.0f s; restarting%s", child.slot,
                        child.proc.pid, _exit_text(code), lived, f" in {pause:.0f} s" if pause else "")
            child.proc, child.restart_at = None, now + pause
        if now >= child.restart_at:
            self._spawn(child)

    def shutdown(self, timeout: float = STOP_GRACE_SECONDS + 5) -> None:
        """SIGTERM every child (they hand their running tasks back), wait, then SIGKILL stragglers."""
        with self._lock:
            self._stop.set()
        running = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker process pid %d did not stop in %.0f s; killing it", proc.pid, timeout)
                proc.kill()
                proc.wait(5)
        if self._thread is not None:
            self._thread.join(2)


def _exit_text(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"code {code}"
