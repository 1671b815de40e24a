"""services/backups.py: what a backup read on an agent's host publishes is the worker's record of it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from opencbr.domain.errors import CBRError
from opencbr.services.backups import _figures, _recorded_by_worker

PARTS = [SimpleNamespace(id="disk-a"), SimpleNamespace(id="disk-b")]
RECORDED = {"disk-a": {"logical_bytes": 1 << 20, "added_bytes": 10}, "disk-b": {"logical_bytes": 2 << 20, "added_bytes": 0}}


def test_only_the_tasks_own_backups_as_the_worker_recorded_them():
    """The agent's answer named the backups to publish (another resource's among them, then marked
    available and given restore material) and their sizes (2^50): neither is taken from it now."""
    said = {"recorded": RECORDED, "disks": [{"backup_id": "victim", "disk_size": 1 << 50}]}
    assert _recorded_by_worker(said, PARTS) == RECORDED
    with pytest.raises(CBRError, match="did not record backup"):
        _recorded_by_worker({"recorded": {"disk-a": RECORDED["disk-a"]}}, PARTS)  # one never committed
    with pytest.raises(CBRError, match="did not record backup"):
        _recorded_by_worker({"recorded": {**RECORDED, "victim": {"logical_bytes": 1, "added_bytes": 1}}}, PARTS)
    with pytest.raises(CBRError):
        _recorded_by_worker({"recorded": "everything"}, PARTS)


def test_only_numbers_of_the_agents_answer_become_stats():
    said = {"files": 3, "read_bytes": 4096, "partial": False, "note": "x" * 10_000, "nested": {"a": 1}, 7: 1}
    assert _figures(said) == {"files": 3, "read_bytes": 4096, "partial": False}
