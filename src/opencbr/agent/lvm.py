"""LVM through its own commands (lvm2): list logical volumes, create and remove snapshots.

The commands' JSON report (``--reportformat json``) is parsed; sizes are asked in bytes (``--units b
--nosuffix``). Every command runs with a timeout, never through a shell, and with LVM's metadata backup
and archive turned off: they write below /etc/lvm, which may be on a file system the agent has just
frozen (a frozen file system blocks writers until it is thawed), and the metadata is on the physical
volumes anyway.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass

_NO_BACKUP = ["--config", "backup { backup = 0 archive = 0 }"]
SNAPSHOT_PREFIX = "opencbr-snap-"


class LvmError(Exception):
    pass


@dataclass(frozen=True)
class LogicalVolume:
    vg: str
    lv: str
    path: str          # /dev/<vg>/<lv>
    size: int
    vg_free: int
    attr: str          # lv_attr: [0] type (V thin, s snapshot, ...), [4] state (a active)

    @property
    def thin(self) -> bool:
        return self.attr[:1] == "V"

    @property
    def snapshot(self) -> bool:
        return self.attr[:1] in ("s", "S") or self.lv.startswith(SNAPSHOT_PREFIX)

    @property
    def active(self) -> bool:
        return self.attr[4:5] == "a"


def available() -> bool:
    return shutil.which("lvs") is not None and shutil.which("lvcreate") is not None


def _run(args: list[str], timeout: float = 60.0) -> str:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=subprocess.DEVNULL, env={**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"})
    except (OSError, subprocess.TimeoutExpired) as e:
        raise LvmError(f"{args[0]}: {e}") from None
    if done.returncode != 0:
        raise LvmError(f"{' '.join(args[:2])}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def volumes(selector: list[str] | None = None, timeout: float = 30.0) -> list[LogicalVolume]:
    """The logical volumes (or those named by ``selector``: ``vg/lv`` or device paths)."""
    out = _run(["lvs", "--reportformat", "json", "--units", "b", "--nosuffix",
                "-o", "lv_name,vg_name,lv_size,lv_path,vg_free,lv_attr", *(selector or [])], timeout)
    try:
        rows = json.loads(out)["report"][0]["lv"]
    except (ValueError, KeyError, IndexError) as e:
        raise LvmError(f"lvs: unexpected report ({e})") from None
    return [LogicalVolume(vg=r["vg_name"], lv=r["lv_name"], path=r.get("lv_path") or f"/dev/{r['vg_name']}/{r['lv_name']}",
                          size=int(r["lv_size"] or 0), vg_free=int(r["vg_free"] or 0), attr=r.get("lv_attr", ""))
            for r in rows]


def create_snapshot(origin: LogicalVolume, name: str, size: int, timeout: float = 60.0) -> str:
    """A snapshot of ``origin`` named ``name`` (``size`` bytes of copy-on-write room; thin volumes need
    none), active; its device path."""
    if origin.thin:
        _run(["lvcreate", *_NO_BACKUP, "-q", "-s", "-kn", "-n", name, f"{origin.vg}/{origin.lv}"], timeout)
    else:
        _run(["lvcreate", *_NO_BACKUP, "-q", "-s", "-n", name, "-L", f"{size}b", f"{origin.vg}/{origin.lv}"], timeout)
    return f"/dev/{origin.vg}/{name}"


def remove(vg: str, lv: str, timeout: float = 60.0) -> bool:
    """Remove ``vg/lv``; False if it was not there."""
    try:
        _run(["lvremove", *_NO_BACKUP, "-q", "-f", f"{vg}/{lv}"], timeout)
        return True
    except LvmError as e:
        if "not found" in str(e).lower() or "failed to find" in str(e).lower():
            return False
        raise
