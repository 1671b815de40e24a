"""One point in time across devices: LVM snapshots taken while the file systems are frozen, a live read
stated honestly otherwise, and the clean-up of what a crashed agent left (snapshots, frozen file systems).

This machine's kernel has no device-mapper, so no logical volume can exist here: lvm2 is exercised for
real where it can be (its report on a real volume group over a loop device, removing a missing volume),
and the snapshot sequence runs against ``fake_lvm.py`` standing in for ``lvs``/``lvcreate``/``lvremove``
(it checks, at the moment of ``lvcreate``, that the origin's file system is frozen). Freezing and thawing
are real (FIFREEZE/FITHAW on an ext4 file system on a loop device)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from opencbr.agent import lvm, mounts
from opencbr.agent.consistency import Consistency, StateFile, clean_leftovers
from tests.agent.conftest import AgentProcess, agent_cmd

FAKE = Path(__file__).with_name("fake_lvm.py")


def _writable(mountpoint: str, timeout: float = 3.0) -> bool:
    """Whether a write to the file system completes (it blocks while frozen); the probe is a child
    process, so a blocked write never blocks the test."""
    probe = subprocess.Popen([sys.executable, "-c", f"open({mountpoint + '/probe'!r}, 'w').write('x')"])
    try:
        probe.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        return False  # (it completes once thawed)


@pytest.fixture
def fake_lvm(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for cmd in ("lvs", "lvcreate", "lvremove"):
        script = bin_dir / cmd
        script.write_text(f'#!/bin/sh\nexec {sys.executable} {FAKE} {cmd} "$@"\n')
        script.chmod(0o755)
    state = tmp_path / "fake-lvm.json"
    state.write_text(json.dumps({"lvs": [], "calls": []}))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LVM_STATE", str(state))

    def add(**lv):
        data = json.loads(state.read_text())
        data["lvs"].append(lv)
        state.write_text(json.dumps(data))

    def read():
        return json.loads(state.read_text())
    return add, read


def test_a_device_that_is_not_on_lvm_is_read_live_and_says_so(tmp_path, loop_device):
    with Consistency(str(tmp_path / "state")).point_in_time([loop_device]) as view:
        assert view[loop_device] == loop_device
        d = view.describe
    assert d["method"] == "live" and loop_device in d["note"]
    assert d["devices"][loop_device]["reason"] in ("not an LVM logical volume", "lvm2 is not installed on the agent's host")


def test_lvm_volumes_are_snapshotted_while_frozen_then_thawed_and_removed(tmp_path, mounted_loop, fake_lvm):
    dev, mnt = mounted_loop
    add, read = fake_lvm
    add(vg="vg0", lv="data", path=dev, size=32 << 20, vg_free=64 << 20, attr="-wi-ao----", mount=mnt)
    state_dir = tmp_path / "state"
    c = Consistency(str(state_dir))
    with c.point_in_time([dev]) as view:
        snap = view[dev]
        assert snap.startswith("/dev/vg0/opencbr-snap-")
        assert view.describe["method"] == "lvm-snapshot" and mnt in view.describe["note"]
        recorded = StateFile(str(state_dir)).read()
        assert [s["lv"] for s in recorded["snapshots"]] == [snap.rsplit("/", 1)[1]] and recorded["frozen"] == []
        assert _writable(mnt)  # thawed as soon as the snapshot exists
    creates = [c for c in read()["calls"] if c[0] == "lvcreate"]
    assert len(creates) == 1 and creates[0][-1] == {"frozen": True}
    assert creates[0][creates[0].index("-L") + 1] == f"{32 << 20}b"  # the whole origin fits in the free room
    assert [v["lv"] for v in read()["lvs"]] == ["data"]  # the snapshot is gone
    assert StateFile(str(state_dir)).read() == {"snapshots": [], "frozen": []}


def test_no_room_in_the_group_means_a_live_read(tmp_path, loop_device, fake_lvm):
    add, read = fake_lvm
    add(vg="vg0", lv="data", path=loop_device, size=32 << 20, vg_free=1 << 20, attr="-wi-a-----")
    with Consistency(str(tmp_path / "state")).point_in_time([loop_device]) as view:
        assert view[loop_device] == loop_device and view.describe["method"] == "live"
        assert "no room" in view.describe["note"]
    assert not [c for c in read()["calls"] if c[0] == "lvcreate"]


def test_crash_leftovers_are_thawed_and_removed(tmp_path, mounted_loop, fake_lvm):
    dev, mnt = mounted_loop
    add, read = fake_lvm
    add(vg="vg0", lv="opencbr-snap-dead-0", path="/dev/vg0/opencbr-snap-dead-0", size=1, vg_free=0, attr="swi-a-s---")
    state_dir = tmp_path / "state"
    StateFile(str(state_dir)).update(lambda s: (
        s["snapshots"].extend([{"vg": "vg0", "lv": "opencbr-snap-dead-0"}, {"vg": "vg0", "lv": "opencbr-snap-dead-1"}]),
        s["frozen"].append(mnt)))
    mounts.freeze(mnt)  # as a crashed agent left it
    assert not _writable(mnt, 0.5)
    done = clean_leftovers(str(state_dir))
    assert done["thawed"] == [mnt] and done["removed"] == ["vg0/opencbr-snap-dead-0"] and not done["failed"]
    assert _writable(mnt) and read()["lvs"] == []
    assert StateFile(str(state_dir)).read() == {"snapshots": [], "frozen": []}


def test_the_agent_cleans_up_when_it_starts(tmp_path, mounted_loop, enrol_service):
    dev, mnt = mounted_loop
    config, state_dir = tmp_path / "agent.json", tmp_path / "state"
    done = agent_cmd(config, "register", "--endpoint", enrol_service.url, "--token", enrol_service.new_token(),
                     "--listen", "127.0.0.1:0", "--state-dir", str(state_dir))
    assert done.returncode == 0, done.stderr
    StateFile(str(state_dir)).update(lambda s: s["frozen"].append(mnt))
    mounts.freeze(mnt)
    agent = AgentProcess(config)
    try:
        assert _writable(mnt)
        assert StateFile(str(state_dir)).read()["frozen"] == []
    finally:
        assert "crash clean-up" in agent.stop()


def test_real_lvm2_reports_a_volume_group_and_a_missing_volume(loop_device):
    if shutil.which("vgcreate") is None:
        pytest.skip("lvm2 is not installed")
    vg = f"ocbrtest{os.getpid()}"
    env = {**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"}
    if subprocess.run(["vgcreate", "-q", vg, loop_device], capture_output=True, env=env, timeout=60).returncode:
        pytest.skip("cannot create a volume group here")
    try:
        assert [v for v in lvm.volumes([vg]) if v.vg == vg] == []
        assert lvm.remove(vg, "opencbr-snap-missing") is False
    finally:
        subprocess.run(["vgremove", "-q", "-f", vg], capture_output=True, env=env, timeout=60)
        subprocess.run(["pvremove", "-q", loop_device], capture_output=True, env=env, timeout=60)


def test_crash_clean_up_removes_only_volumes_named_as_the_agent_names_its_snapshots(tmp_path, fake_lvm):
    """The record is a file: whatever wrote it (a restore into a state directory below a root, a bug), a
    volume that is not one of the agent's snapshots is never lvremoved on its word."""
    add, read = fake_lvm
    add(vg="vg0", lv="root", path="/dev/vg0/root", size=1, vg_free=0, attr="-wi-ao----")
    add(vg="vg0", lv="opencbr-snap-dead-0", path="/dev/vg0/opencbr-snap-dead-0", size=1, vg_free=0, attr="swi-a-s---")
    state_dir = tmp_path / "state"
    StateFile(str(state_dir)).update(lambda s: s["snapshots"].extend(
        [{"vg": "vg0", "lv": "root"}, {"vg": "vg0", "lv": "opencbr-snap-dead-0"}, "junk"]))
    done = clean_leftovers(str(state_dir))
    assert done["removed"] == ["vg0/opencbr-snap-dead-0"] and len(done["failed"]) == 2
    assert [v["lv"] for v in read()["lvs"]] == ["root"]
    assert not [c for c in read()["calls"] if c[0] == "lvremove" and "vg0/root" in c]
