"""A private chunk index (GC's, the engine alone's) lives in a temporary directory removed with its object;
a process killed before it can remove it (SIGKILL) left it behind for good. The next private index
removes the directories no live process holds (their owner lock), never a live one's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile

from opencbr.engine.chunks.diskindex import PRIVATE_PREFIX, DiskChunkIndex

HOLDER = """
import sys, time
from opencbr.engine.chunks.diskindex import DiskChunkIndex
idx = DiskChunkIndex(None)
print(idx.directory, flush=True)
time.sleep(600)
"""


def _holder(tmp_path) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    p = subprocess.Popen([sys.executable, "-c", HOLDER], env=env, stdout=subprocess.PIPE, text=True)
    return p, p.stdout.readline().strip()


def test_the_directories_of_killed_processes_are_removed_and_live_ones_kept(tmp_path, monkeypatch):
    killed, killed_dir = _holder(tmp_path)
    alive, alive_dir = _holder(tmp_path)
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        assert os.path.isdir(killed_dir) and os.path.basename(killed_dir).startswith(PRIVATE_PREFIX)
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        mine = DiskChunkIndex(None)
        assert not os.path.exists(killed_dir)  # left by the killed process: removed
        assert os.path.isdir(alive_dir)  # held by a live process: kept
        assert os.path.isdir(mine.directory)
        DiskChunkIndex(None)  # another in this process does not take this one's either
        assert os.path.isdir(mine.directory)
    finally:
        alive.kill()
        alive.wait()


def test_a_private_index_removes_its_directory_with_itself(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    idx = DiskChunkIndex(None)
    path = idx.directory
    idx.sync_with([], lambda name: [])
    del idx
    import gc

    gc.collect()
    assert not os.path.exists(path)
