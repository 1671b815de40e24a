"""The post-thaw guardian of the custom scripts (see scripts.py): a process of its own, started before
the first pre-freeze script, that runs the post-thaw scripts when the agent says ``thaw``, when the
agent dies (end of file on its pipe) or when the hold lasts too long, whichever comes first.

Run as ``python -m opencbr.agent.hooks.guardian DIR TIMEOUT HOLD LABEL``."""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time

from .outcome import HookError
from .scripts import list_scripts, run_phase


def guard(root: str, timeout: float, hold: float, label: str) -> None:
    """Wait for the agent's word (``frozen`` starts the hold timer, ``thaw`` ends the wait), its death
    (end of file) or the timeout; then run the post-thaw scripts and report them as JSON lines (to
    nobody if the agent is gone). Before ``frozen`` the wait is bounded by the pre-freeze budget."""
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    fd = sys.stdin.fileno()
    try:
        count = len(list_scripts(root, "pre-freeze")[0])
    except HookError:
        count = 0
    deadline = time.monotonic() + hold + timeout * (count + 4)  # pre-freeze of every hook, then the hold
    cause, pending = "hold timeout", b""
    while True:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        data = os.read(fd, 64)
        if not data:
            cause = "agent gone"
            break
        pending += data
        if b"thaw\n" in pending:
            cause = "thaw"
            break
        if b"frozen\n" in pending:
            pending = pending.replace(b"frozen\n", b"")
            deadline = time.monotonic() + hold
    outcomes = run_phase(root, "post-thaw", timeout, label, stop_at_failure=False)
    for record in [o.as_dict() for o in outcomes] + [{"done": cause}]:
        if cause != "thaw" and "message" in record:
            record["message"] += f" (run by the guardian: {cause})"
        try:
            sys.stdout.write(json.dumps(record) + "\n")
            sys.stdout.flush()
        except OSError:
            pass


if __name__ == "__main__":
    guard(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
