"""One point in time across a host's disks: LVM snapshots taken while their file systems are frozen.

``Consistency(state_dir).point_in_time(devices)`` is a context manager yielding a :class:`View`:
``view[device]`` is the path to read for that device (a snapshot's device, or the device itself) and
``view.describe`` (also ``view["describe"]``) the record a backup keeps of how its point in time was
obtained:

- ``lvm-snapshot``: every device is an LVM logical volume whose volume group has room; the file
  systems mounted from them are frozen (FIFREEZE), one snapshot per volume is created, they are thawed
  at once (the freeze lasts as long as the ``lvcreate`` calls, typically well under a second), and the
  snapshots are read. All of them show the same instant. A file system the agent itself needs while
  frozen (``/``, the one holding its state directory or its program) is not frozen by the agent: the
  device-mapper suspend of ``lvcreate`` flushes and freezes it for its own snapshot, which is then
  consistent on its own (noted in the record).
- ``live``: some device is not on LVM, or its group lacks room, or lvm2 is missing: the devices are read
  as they are, and the record says which and why (blocks written during the backup may come from
  different moments).

Snapshots are removed when the block ends. Each is recorded in ``<state_dir>/snapshots.json`` before
it is created, and each freeze before it is made, so that :func:`clean_leftovers` (run when the agent
starts) removes the snapshots and thaws the file systems a crashed agent left behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime

from opencbr.agent import lvm, mounts, statefiles

log = logging.getLogger("opencbr.agent.consistency")

#: The smallest copy-on-write room worth a snapshot; below it the device is read live.
MIN_SNAPSHOT_BYTES = 8 << 20
_STATE_FILE = "snapshots.json"


class View(dict):
    """``device -> path to read`` plus ``"describe"`` -> the consistency record (also ``.describe``)."""

    @property
    def describe(self) -> dict:
        return self["describe"]


class StateFile:
    """The snapshots and freezes in flight, written (fsync, rename) before they are made."""

    def __init__(self, state_dir: str):
        self.path = os.path.join(state_dir, _STATE_FILE)
        self._lock = threading.Lock()
        os.makedirs(state_dir, mode=0o700, exist_ok=True)

    def _read(self) -> dict:
        try:
            data = statefiles.read_json(self.path)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            return {"snapshots": list(data.get("snapshots", [])), "frozen": list(data.get("frozen", []))}
        except FileNotFoundError:
            return {"snapshots": [], "frozen": []}
        except ValueError:
            log.warning("%s is not JSON; starting a new one", self.path)
            return {"snapshots": [], "frozen": []}

    def _write(self, data: dict) -> None:
        statefiles.write_json(self.path, data, mode=0o644)  # (never through a symlink at snapshots.json.tmp)

    def update(self, fn) -> None:
        with self._lock:
            data = self._read()
            fn(data)
            self._write(data)

    def read(self) -> dict:
        with self._lock:
            return self._read()


def clean_leftovers(state_dir: str) -> dict:
    """Thaw what a crashed agent left frozen and remove the snapshots it left; what was done."""
    state = StateFile(state_dir)
    data = state.read()
    done = {"thawed": [], "removed": [], "failed": []}
    for mp in data["frozen"]:
        try:
            if mounts.thaw(mp):
                done["thawed"].append(mp)
        except OSError as e:
            done["failed"].append(f"thaw {mp}: {e}")
    kept = []
    for snap in data["snapshots"]:
        if not (isinstance(snap, dict) and isinstance(snap.get("vg"), str) and isinstance(snap.get("lv"), str)
                and snap["lv"].startswith(lvm.SNAPSHOT_PREFIX)):
            # not a snapshot this agent makes (they are all named so): never removed on a record's word
            done["failed"].append(f"not removed, not one of the agent's snapshots: {snap!r}")
            continue
        try:
            if lvm.remove(snap["vg"], snap["lv"]):
                done["removed"].append(f"{snap['vg']}/{snap['lv']}")
        except lvm.LvmError as e:
            done["failed"].append(f"remove {snap['vg']}/{snap['lv']}: {e}")
            kept.append(snap)
    state.update(lambda d: d.update(snapshots=[s for s in d["snapshots"] if s in kept or s not in data["snapshots"]],
                                    frozen=[m for m in d["frozen"] if m not in data["frozen"]]))
    if done["thawed"] or done["removed"] or done["failed"]:
        log.warning("crash clean-up: %s", done)
    return done


def _unfreezable(state_dir: str) -> set[str]:
    """Mount points the agent must not freeze: those it writes or loads from while they would be frozen."""
    table = mounts.mounts()
    needed = ["/", state_dir, sys.prefix, os.path.dirname(os.path.abspath(__file__)), "/etc/lvm", "/run"]
    return {m.mountpoint for m in (mounts.holding(p, table) for p in needed) if m is not None}


class Consistency:
    """The agent's point-in-time maker (one per agent; thread-safe)."""

    def __init__(self, state_dir: str, logger: logging.Logger | None = None):
        self.state_dir = state_dir
        self.state = StateFile(state_dir)
        self.log = logger or log

    @contextlib.contextmanager
    def point_in_time(self, devices: list[str], *, freeze_mounts: bool = True):
        plan, reasons = self._plan(devices)
        made: list[dict] = []
        try:
            frozen_note = self._snapshot_all(plan, made, freeze_mounts) if plan else []
            yield self._view(devices, made, reasons, frozen_note)
        finally:
            self._remove(made)

    def _plan(self, devices: list[str]) -> tuple[list[tuple[str, lvm.LogicalVolume, int]], dict[str, str]]:
        """Which devices get a snapshot (device, volume, size) and why the others do not."""
        reasons: dict[str, str] = {}
        if not lvm.available():
            return [], {d: "lvm2 is not installed on the agent's host" for d in devices}
        try:
            by_path = {os.path.realpath(v.path): v for v in lvm.volumes()}
        except lvm.LvmError as e:
            return [], {d: f"LVM cannot be asked ({e})" for d in devices}
        chosen: list[tuple[str, lvm.LogicalVolume]] = []
        for d in devices:
            v = by_path.get(os.path.realpath(d))
            if v is None:
                reasons[d] = "not an LVM logical volume"
            elif v.snapshot:
                reasons[d] = "already a snapshot"
            else:
                chosen.append((d, v))
        per_vg: dict[str, int] = {}
        for _, v in chosen:
            per_vg[v.vg] = per_vg.get(v.vg, 0) + (0 if v.thin else 1)
        plan = []
        for d, v in chosen:
            size = 0 if v.thin else min(v.size, v.vg_free // max(per_vg[v.vg], 1)) // (4 << 20) * (4 << 20)
            if not v.thin and size < min(MIN_SNAPSHOT_BYTES, v.size):
                reasons[d] = f"volume group {v.vg} has {v.vg_free} bytes free: no room for a snapshot"
            else:
                plan.append((d, v, size))
        return plan, reasons

    def _snapshot_all(self, plan, made: list[dict], freeze_mounts: bool) -> list[str]:
        """Freeze, snapshot every planned volume, thaw. Appends to ``made`` what exists; returns notes."""
        notes: list[str] = []
        to_freeze: list[str] = []
        if freeze_mounts:
            skip = _unfreezable(self.state_dir)
            for d, _, _ in plan:
                for m in mounts.mounts_of(os.stat(d).st_rdev):
                    if m.mountpoint in skip:
                        notes.append(f"{m.mountpoint} was frozen by device-mapper for its own snapshot only "
                                     "(the agent needs it while running)")
                    elif m.mountpoint not in to_freeze:
                        to_freeze.append(m.mountpoint)
        batch = uuid.uuid4().hex[:8]
        records = [{"vg": v.vg, "lv": f"{lvm.SNAPSHOT_PREFIX}{batch}-{i}", "origin": v.lv, "device": d,
                    "size": size, "pid": os.getpid(), "created_at": time.time()} for i, (d, v, size) in enumerate(plan)]
        self.state.update(lambda s: (s["snapshots"].extend(records), s["frozen"].extend(to_freeze)))
        frozen: list[str] = []
        try:
            for mp in to_freeze:
                mounts.freeze(mp)
                frozen.append(mp)
            for rec, (_, v, size) in zip(records, plan, strict=True):
                rec["path"] = lvm.create_snapshot(v, rec["lv"], size)
                made.append(rec)
        except BaseException:
            self._thaw(frozen)
            self.state.update(lambda s: s.update(frozen=[m for m in s["frozen"] if m not in to_freeze]))
            self._remove(made + [r for r in records if r not in made])
            made.clear()
            raise
        self._thaw(frozen)
        self.state.update(lambda s: s.update(frozen=[m for m in s["frozen"] if m not in to_freeze]))
        if frozen:
            notes.append(f"frozen while the snapshots were taken: {', '.join(frozen)}")
        return notes

    def _thaw(self, frozen: list[str]) -> None:
        for mp in frozen:
            try:
                mounts.thaw(mp)
            except OSError as e:  # left in the state file: clean_leftovers tries again
                self.log.error("thawing %s failed: %s", mp, e)

    def _remove(self, records: list[dict]) -> None:
        gone = []
        for rec in records:
            try:
                lvm.remove(rec["vg"], rec["lv"])
                gone.append(rec["lv"])
            except lvm.LvmError as e:  # left in the state file: removed when the agent starts again
                self.log.error("removing the snapshot %s/%s failed: %s", rec["vg"], rec["lv"], e)
        if gone:
            self.state.update(lambda s: s.update(snapshots=[r for r in s["snapshots"] if r["lv"] not in gone]))

    @staticmethod
    def _view(devices: list[str], made: list[dict], reasons: dict[str, str], notes: list[str]) -> View:
        snap = {r["device"]: r for r in made}
        per_device = {d: ({"method": "lvm-snapshot", "snapshot": snap[d]["path"]} if d in snap
                          else {"method": "live", "reason": reasons.get(d, "")}) for d in devices}
        live = [d for d in devices if d not in snap]
        if not live:
            method, note = "lvm-snapshot", "all devices were snapshotted (LVM) at one moment and the snapshots were read"
        else:
            method = "live"
            note = ("read live (blocks written during the backup may come from different moments): "
                    + "; ".join(f"{d}: {reasons.get(d, '')}" for d in live))
            if snap:
                note += f"; snapshotted: {', '.join(snap)}"
        if notes:
            note += "; " + "; ".join(notes)
        view = View({d: snap[d]["path"] if d in snap else d for d in devices})
        view["describe"] = {"method": method, "note": note, "devices": per_device,
                            "taken_at": datetime.now(UTC).isoformat()}
        return view
