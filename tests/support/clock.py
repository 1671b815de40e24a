"""A clock the tests move by hand, for the services and the scheduler."""

from __future__ import annotations

from datetime import datetime, timedelta


class FakeClock:
    """Starts on Monday 2026-01-05 10:00; ``advance(hours=…)`` moves it."""

    def __init__(self):
        self.now = datetime(2026, 1, 5, 10, 0, 0)

    def __call__(self):
        return self.now

    def advance(self, **kw):
        self.now += timedelta(**kw)
