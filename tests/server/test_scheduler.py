"""``cbr scheduler`` (opencbr.server.scheduler): the scheduler alone, as a real process, over a fresh catalog;
SIGTERM stops it in order."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def test_the_scheduler_alone_starts_and_stops_in_order_on_sigterm(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCBR_")}
    env.update(HOME=str(tmp_path / "home"), OPENCBR_DATA_DIR=str(tmp_path / "data"))
    log = tmp_path / "scheduler.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "opencbr.cli.main", "scheduler"], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and "running" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            time.sleep(0.1)
        assert "running" in log.read_text(), log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "scheduler stopping (SIGTERM)" in text and "Traceback" not in text, text
    assert (tmp_path / "data" / "catalog.db").exists()  # it migrated the catalog it was given
