"""``SqlClient``: a client that exits before it reads its input still says why."""

from __future__ import annotations

import time

import pytest

from opencbr.agent.hooks.client import MariadbClient
from opencbr.agent.hooks.outcome import HookError


def test_a_client_that_exited_before_reading_reports_its_own_message(tmp_path):
    # A real process that behaves like `mariadb --socket /nonexistent`: prints why and exits at once,
    # without reading its input, so writing the statement meets a closed pipe.
    c = MariadbClient(["sh", "-c", "echo \"ERROR 2002 (HY000): Can't connect to local server\" >&2; exit 1"],
                      name="absent")
    deadline = time.monotonic() + 10
    while c.alive and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not c.alive
    with pytest.raises(HookError) as e:
        c.execute("SELECT 1" + "-- padding " * 20000, timeout=5)  # larger than a pipe's buffer
    assert "Can't connect to local server" in str(e.value)
