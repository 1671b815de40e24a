"""The agent's records in its state directory (agent/statefiles.py, used by made.py and consistency.py)
are never read or written through a symbolic link planted beside them."""

from __future__ import annotations

import json
import os

from opencbr.agent import statefiles
from opencbr.agent.consistency import StateFile
from opencbr.agent.made import MadeDirs


def _planted(tmp_path):
    """A state directory with ``made.json.tmp`` and ``snapshots.json.tmp`` as symlinks to a file outside
    (what a tenant's restore-files puts there when the state directory lies below a root: a tree
    backup's symlinks are restored as they are)."""
    state, victim = tmp_path / "state", tmp_path / "shadow"
    state.mkdir()
    victim.write_bytes(b"root:$6$hash:19000:0:99999:7:::\n")
    for name in ("made.json.tmp", "snapshots.json.tmp"):
        os.symlink(victim, state / name)
    return state, victim


def test_writing_a_record_never_follows_a_symlink_at_its_temporary_name(tmp_path):
    """It did: open(<record>.tmp, "w") truncated and overwrote the file the link named (as root), and
    the rename then made the record itself that link."""
    state, victim = _planted(tmp_path)
    MadeDirs(str(state)).record("/srv/new", "task-1", "/srv/new")
    StateFile(str(state)).update(lambda d: d["frozen"].append("/mnt"))
    assert victim.read_bytes() == b"root:$6$hash:19000:0:99999:7:::\n"
    for name in ("made.json", "snapshots.json"):
        assert not (state / name).is_symlink() and (state / name).is_file()
        assert not os.path.lexists(state / f"{name}.tmp")
    assert MadeDirs(str(state)).made_by("/srv/new")["task"] == "task-1"
    assert StateFile(str(state)).read()["frozen"] == ["/mnt"]


def test_a_record_that_is_a_symlink_reads_as_missing(tmp_path):
    state, victim = tmp_path / "state", tmp_path / "elsewhere.json"
    state.mkdir()
    victim.write_text(json.dumps({"snapshots": [{"vg": "vg0", "lv": "root"}], "frozen": ["/"]}))
    os.symlink(victim, state / "snapshots.json")
    os.symlink(victim, state / "made.json")
    assert StateFile(str(state)).read() == {"snapshots": [], "frozen": []}  # (no lvremove of vg0/root at start)
    assert MadeDirs(str(state)).made_by("/srv/x") is None
    statefiles.write_json(str(state / "made.json"), {"a": 1})  # replaces the link, not what it names
    assert json.loads(victim.read_text())["frozen"] == ["/"] and statefiles.read_json(str(state / "made.json")) == {"a": 1}
