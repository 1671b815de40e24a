"""Whether this host's applications can be quiesced, for the service's heartbeat (``check_agent``).

The service polls the agent's inventory every few seconds and waits a few seconds for the answer;
:func:`check` connects to every database (up to its timeout each). So the answer carries the last
result, at most ``TTL`` seconds old, and a check runs in the background when it is older (never two
at once): ``{"state": "checking"}`` until the first one ends, then
``{"state": "checked", "checked_at", "hooks": [...check results...]}``.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

from .plan import discover
from .quiesce import check

#: Seconds a result is answered before a new check starts (a privilege granted shows within this).
TTL = 120.0
_CHECK_TIMEOUT = 10.0


class Readiness:
    def __init__(self, ttl: float = TTL):
        self.ttl = ttl
        self._lock = threading.Lock()
        self._result: dict = {"state": "checking"}
        self._at = -float("inf")
        self._running = False

    def answer(self, hooks_config: dict | None) -> dict:
        """The last result; starts a check in the background when it is older than ``ttl``."""
        with self._lock:
            if not self._running and time.monotonic() - self._at >= self.ttl:
                self._running = True
                threading.Thread(target=self._run, args=(dict(hooks_config or {}),), daemon=True,
                                 name="hooks-readiness").start()
            return dict(self._result)

    def _run(self, hooks_config: dict) -> None:
        try:
            try:
                result = {"state": "checked", "hooks": check(discover(hooks_config), timeout=_CHECK_TIMEOUT)}
            except ValueError as e:  # a bad hooks configuration: said, never a crash of the heartbeat
                result = {"state": "checked", "hooks": [], "error": f"the agent's hooks configuration is not usable: {e}"}
            result["checked_at"] = datetime.now(UTC).isoformat()
        except Exception as e:  # noqa: BLE001 - the heartbeat must go on; the answer says what failed
            result = {"state": "checked", "hooks": [], "error": f"{type(e).__name__}: {e}"}
        with self._lock:
            self._result, self._at, self._running = result, time.monotonic(), False


_readiness = Readiness()


def readiness(hooks_config: dict | None) -> dict:
    """This agent process's :class:`Readiness` answer."""
    return _readiness.answer(hooks_config)
