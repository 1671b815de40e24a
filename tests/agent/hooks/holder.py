"""A stand-in for the agent's task: quiesce the applications of a JSON config, say so, then wait to
be killed between pre-freeze and post-thaw (``python -m tests.agent.hooks.holder CONFIG TIMEOUT HOLD``)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from opencbr.agent.hooks import Quiesce, discover


class Holder:
    """The holder process, started and killed by a test."""

    def __init__(self, config: dict, timeout: float = 10.0, hold: float = 60.0):
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.agent.hooks.holder", json.dumps(config), str(timeout),
                                      str(hold)], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        assert line, "the holder exited before quiescing"
        self.state = json.loads(line)

    def kill(self) -> float:
        """SIGKILL the holder; the monotonic time of its death."""
        self.proc.kill()
        self.proc.wait(10)
        return time.monotonic()


def main() -> None:
    config, timeout, hold = json.loads(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    with Quiesce(discover(config), timeout=timeout, hold_timeout=hold) as q:
        print(json.dumps({"achieved": q.achieved, "reason": q.reason}), flush=True)
        time.sleep(3600)


if __name__ == "__main__":
    main()
