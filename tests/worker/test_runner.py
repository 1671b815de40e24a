"""worker/runner.py: what a task leaves behind in the worker process."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

from opencbr.services import resources
from opencbr.worker import runner
from opencbr.worker.runner import Worker
from tests.support.scheduler import backup_now, vault

REPO = Path(__file__).resolve().parents[2]


def test_a_finished_task_leaves_nothing_in_reference_cycles(ctx, tenant, tmp_path, monkeypatch):
    """A tree backup leaves its threads', pools' and session's structures in reference cycles, with their
    buffers (the bench tree's full backup: ~50 MB, a worker's RSS 104 -> 307 MB over five of them). Python
    frees such cycles only in a full collection, which a worker's many long-lived objects make rare: the
    worker collects after each task (55-60 MB over the same five)."""
    tree = tmp_path / "share"
    subprocess.run([sys.executable, str(REPO / "bench" / "make_dataset.py"), "tree", str(tree), "--files", "2000",
                    "--total", "40M", "--seed", "4"], check=True, stdout=subprocess.DEVNULL)
    with ctx.tx() as s:
        fs = resources.register_file_system(s, ctx, tenant, name="share", path=str(tree))
    v = vault(ctx, tenant, "v-share", [fs.id], object_type="turbo", rtype="OS::Sfs::Turbo")
    backup_now(ctx, tenant, v.id)
    monkeypatch.setattr(runner, "COLLECT_AFTER_SECONDS", 0.0)  # (this small backup takes less than a second)
    gc.collect()
    gc.disable()  # (no automatic collection during the task: what is freed is what the worker frees)
    try:
        assert Worker(ctx, "w1").run_once()
        left = gc.collect()  # what the task left in cycles, if the worker had not collected it
    finally:
        gc.enable()
    assert left < 10, f"{left} objects of the task were left in reference cycles"
