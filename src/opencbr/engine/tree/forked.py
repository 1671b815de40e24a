"""Helper processes (``fork``): what the tree engine runs beside its own threads to use a second
core without sharing the GIL -- the parts of a big restore (restore/parts.py) and the metadata warmer of
an incremental walk (walker.py). A helper never outlives the process that forked it, and is always
reaped."""

from __future__ import annotations

import os
import signal

from ...system.processes import stop_with_parent


def die_with_parent(parent_pid: int) -> None:
    """Call first thing in a forked helper: if the process that forked it dies (kill -9 of the
    service), the kernel kills the helper too (``PR_SET_PDEATHSIG``; Linux)."""
    if not stop_with_parent(parent_pid, signal.SIGKILL):
        os._exit(1)


def kill_and_reap(pid: int) -> None:
    """Stop a helper for good and reap it."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def exit_reason(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
