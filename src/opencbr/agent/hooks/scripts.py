"""Custom scripts: ``<dir>/pre-freeze.d/*`` before the consistency point, ``<dir>/post-thaw.d/*`` after.

Rules (docs/app-consistent.md): the directory, its ``pre-freeze.d`` / ``post-thaw.d`` and every script
must be owned by root or by the agent's user and not writable by group or others, and must not be
symbolic links; scripts must be executable regular files named like run-parts wants
(``[A-Za-z0-9_-]+``; other names are ignored: ``foo.sample``, ``foo~``). Any breach refuses the whole
phase with the reason. Scripts run in name order, each with a timeout (its process group is killed
after it), with ``OPENCBR_HOOK_PHASE`` and ``OPENCBR_BACKUP_LABEL`` set; their output is kept (bounded).

Post-thaw must run once pre-freeze ran, even if the agent dies in between. So before the first
pre-freeze script, the agent starts a *guardian*: this module run as a separate process, in its own
session, waiting on a pipe from the agent (guardian.py). The agent writes ``thaw`` when the snapshot is done; if
the pipe closes first (the agent died) or the hold timeout passes, the guardian runs the post-thaw
scripts by itself.
"""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time

from .outcome import HookError, HookOutcome, bounded

PHASES = ("pre-freeze", "post-thaw")
NAME_RULE = re.compile(r"^[A-Za-z0-9_-]+$")


def _refusal(path: str, *, directory: bool) -> str | None:
    """Why ``path`` may not be trusted, or None."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return f"{path} does not exist"
    if stat.S_ISLNK(st.st_mode):
        return f"{path} is a symbolic link"
    if directory and not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if not directory and not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    if st.st_uid not in (0, os.geteuid()):
        return f"{path} is owned by uid {st.st_uid}, not root or the agent's user"
    if st.st_mode & 0o022:
        return f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):o})"
    if not directory and not st.st_mode & stat.S_IXUSR:
        return f"{path} is not executable"
    return None


def list_scripts(root: str, phase: str) -> tuple[list[str], list[str]]:
    """The scripts of ``phase`` in run order, and the names ignored. Raises HookError if the
    directory or a script may not be trusted."""
    problem = _refusal(root, directory=True)
    if problem:
        raise HookError(problem)
    folder = os.path.join(root, f"{phase}.d")
    if not os.path.lexists(folder):
        return [], []
    problem = _refusal(folder, directory=True)
    if problem:
        raise HookError(problem)
    scripts, ignored = [], []
    for name in sorted(os.listdir(folder)):
        if not NAME_RULE.match(name):
            ignored.append(name)
            continue
        path = os.path.join(folder, name)
        problem = _refusal(path, directory=False)
        if problem:
            raise HookError(f"refused: {problem}")
        scripts.append(path)
    return scripts, ignored


def run_script(path: str, phase: str, timeout: float, label: str) -> HookOutcome:
    outcome = HookOutcome(name=f"{phase}.d/{os.path.basename(path)}", kind="script", phase=phase)
    env = dict(os.environ, OPENCBR_HOOK_PHASE=phase, OPENCBR_BACKUP_LABEL=label)
    started = time.monotonic()
    try:
        proc = subprocess.Popen([path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                cwd=os.path.dirname(path), env=env, start_new_session=True)
    except OSError as e:
        outcome.fail(f"cannot run: {e}")
        return outcome
    try:
        out, _ = proc.communicate(timeout=timeout)
        outcome.ok = proc.returncode == 0
        outcome.message = f"exit status {proc.returncode}" if proc.returncode else "ok"
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = proc.communicate()
        outcome.fail(f"timed out after {timeout:g} s and was killed")
    outcome.output = bounded(out.decode(errors="replace"))
    outcome.details["seconds"] = round(time.monotonic() - started, 3)
    return outcome


def run_phase(root: str, phase: str, timeout: float, label: str, *, stop_at_failure: bool) -> list[HookOutcome]:
    try:
        scripts, _ = list_scripts(root, phase)
    except HookError as e:
        return [HookOutcome(name=f"{phase}.d", kind="script", ok=False, message=str(e), phase=phase)]
    outcomes = []
    for path in scripts:
        outcomes.append(run_script(path, phase, timeout, label))
        if stop_at_failure and not outcomes[-1].ok:
            break
    return outcomes


class ScriptHook:
    kind = "script"

    def __init__(self, root: str, label: str = "opencbr"):
        self.root = root
        self.label = label
        self.name = f"scripts:{root}"
        self.outcomes: list[HookOutcome] = []
        self.guardian: subprocess.Popen | None = None

    def freeze(self, timeout: float, hold_timeout: float) -> bool:
        try:
            for phase in PHASES:  # refuse before anything runs if post-thaw could not
                list_scripts(self.root, phase)
        except HookError as e:
            self.outcomes.append(HookOutcome(name=self.name, kind=self.kind, message=f"refused: {e}"))
            return False
        self.guardian = _start_guardian(self.root, timeout, hold_timeout, self.label)
        self.outcomes += run_phase(self.root, "pre-freeze", timeout, self.label, stop_at_failure=True)
        return all(o.ok for o in self.outcomes)

    def frozen(self) -> None:
        """Every hook is frozen: the guardian's hold timer starts now."""
        self._tell(b"frozen\n")

    def _tell(self, word: bytes) -> None:
        try:
            self.guardian.stdin.write(word)
            self.guardian.stdin.flush()
        except (OSError, AttributeError):
            pass  # the guardian already ran post-thaw (hold timeout): its report is in its output

    def thaw(self, timeout: float) -> None:
        g = self.guardian
        if g is None:
            return
        self._tell(b"thaw\n")
        self.guardian = None
        try:
            out, _ = g.communicate(timeout=timeout * (1 + len(list_scripts(self.root, "post-thaw")[0])) + 10)
        except (subprocess.TimeoutExpired, HookError) as e:
            g.kill()
            out, _ = g.communicate()
            self.outcomes.append(HookOutcome(name=self.name, kind=self.kind, phase="post-thaw",
                                             message=f"post-thaw guardian: {e}"))
        for line in out.decode(errors="replace").splitlines():
            record = json.loads(line)
            if "name" in record:
                self.outcomes.append(HookOutcome(**record))

    def expire(self) -> None:
        pass  # the guardian keeps its own hold timer

    def check(self, timeout: float) -> dict:
        result = {"name": self.name, "kind": self.kind, "ok": True, "message": "", "scripts": {}}
        try:
            for phase in PHASES:
                scripts, ignored = list_scripts(self.root, phase)
                result["scripts"][phase] = [os.path.basename(s) for s in scripts]
                if ignored:
                    result.setdefault("ignored", []).extend(f"{phase}.d/{n}" for n in ignored)
            result["message"] = "scripts can run"
        except HookError as e:
            result.update(ok=False, message=str(e))
        return result


def _start_guardian(root: str, timeout: float, hold: float, label: str) -> subprocess.Popen:
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, "-m", "opencbr.agent.hooks.guardian", root, str(timeout), str(hold), label],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True)
