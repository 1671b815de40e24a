"""What the host has: its identity, its block devices, image files under the roots, the directories asked for.

Everything is read from the kernel's own tables (/sys/class/block, /proc/self/mountinfo) and, where
installed, ``blkid`` (file system types) and ``lvs`` (logical volumes). Only what the agent's policy
allows is reported (devices matching its patterns, files below its roots); loop, ram and zram devices
only when a device pattern names them (not through the catch-all ``/dev/*``). Walking the roots and
sizing directories is bounded in time (and says when it stopped early), images are looked for
``IMAGE_DEPTH`` directories deep at most, and both are redone only every ``WALK_TTL`` seconds: the
service polls often.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import threading
import time

from opencbr.agent import lvm, mounts
from opencbr.agent.confinement import Confinement, PathSwapped
from opencbr.system.beneath import walk_below

IMAGE_SUFFIXES = (".img", ".raw")
REFUSED_SUFFIXES = {".qcow2": "qcow2 images are not supported: only raw images can be protected",
                    ".vmdk": "vmdk images are not supported: only raw images can be protected",
                    ".vdi": "vdi images are not supported: only raw images can be protected"}
_VIRTUAL = ("loop", "ram", "zram")
_CATCH_ALL = ("/dev/*", "/dev/**")
#: Image files are looked for this many directories deep below a root, at most.
IMAGE_DEPTH = 4
#: The service polls the inventory every few seconds; walking the roots and sizing directories is
#: repeated only this often (seconds).
WALK_TTL = 120.0


class _Recent:
    """Results of the expensive walks, kept ``WALK_TTL`` seconds (per agent process)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._items: dict = {}
        self._generation = 0  # moved on by clear()

    def generation(self) -> int:
        """Pass it to ``put`` for a result computed from now on."""
        return self._generation

    def get(self, key):
        with self._lock:
            hit = self._items.get(key)
        return hit[1] if hit and time.monotonic() - hit[0] < WALK_TTL else None

    def clear(self) -> None:
        with self._lock:
            self._items = {}
            self._generation += 1

    def put(self, key, value, generation: int | None = None):
        """Keep ``value``, unless the walks were forgotten while it was computed (since ``generation``):
        a walk that began before a task made an image would otherwise bring back the list without it."""
        with self._lock:
            if generation is not None and generation != self._generation:
                return value
            self._items = {k: v for k, v in self._items.items() if time.monotonic() - v[0] < WALK_TTL}
            self._items[key] = (time.monotonic(), value)
        return value


_recent = _Recent()


def forget_walks() -> None:
    """After the agent made an image or filled a directory itself: the next inventory walks again (a
    new disk must not look gone, nor a restored directory keep its old size, for ``WALK_TTL``)."""
    _recent.clear()


def _read(path: str, default: str = "") -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return default


def os_release(path: str = "/etc/os-release") -> str:
    fields = {}
    for line in _read(path).splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key] = value.strip().strip('"')
    return fields.get("PRETTY_NAME") or " ".join(filter(None, (fields.get("NAME"), fields.get("VERSION_ID")))) or "Linux"


def primary_ip(towards: str = "192.0.2.1") -> str:
    """The source address the host would use towards ``towards`` (a UDP connect sends nothing)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((towards, 9))
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def host(towards: str | None = None) -> dict:
    return {"host_name": socket.gethostname(), "host_os": os_release(), "host_ip": primary_ip(towards or "192.0.2.1"),
            "machine_id": _read("/etc/machine-id"), "boot_id": _read("/proc/sys/kernel/random/boot_id")}


def _fstypes() -> dict[str, str]:
    """device path -> file system type, from blkid's low-level probe (needs root; empty otherwise)."""
    if shutil.which("blkid") is None:
        return {}
    try:
        out = subprocess.run(["blkid", "-c", "/dev/null", "-o", "export"], capture_output=True, text=True,
                             timeout=15, stdin=subprocess.DEVNULL).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    found, name = {}, None
    for line in out.splitlines() + [""]:
        key, _, value = line.partition("=")
        if key == "DEVNAME":
            name = value
        elif key == "TYPE" and name:
            found[name] = value
        elif not line:
            name = None
    return found


def _sys_devices() -> list[dict]:
    """Every block device the kernel lists: name, kind (disk/part/dm), size, major:minor, parent."""
    found = []
    for name in sorted(os.listdir("/sys/class/block")):
        base = f"/sys/class/block/{name}"
        kind = "part" if os.path.exists(f"{base}/partition") else "dm" if os.path.isdir(f"{base}/dm") else "disk"
        parent = os.path.basename(os.path.dirname(os.path.realpath(base))) if kind == "part" else ""
        major, _, minor = _read(f"{base}/dev").partition(":")
        found.append({"name": name, "kind": kind, "parent": parent, "size": int(_read(f"{base}/size", "0") or 0) * 512,
                      "rdev": (int(major or 0), int(minor or 0)), "dm_name": _read(f"{base}/dm/name"),
                      "dm_uuid": _read(f"{base}/dm/uuid")})
    return found


def block_devices(confinement: Confinement) -> list[dict]:
    table = mounts.mounts()
    mounted: dict[tuple[int, int], mounts.Mount] = {}
    for m in table:  # the first mount of a device is the one it was mounted at first (bind mounts come later)
        mounted.setdefault(m.device, m)
    devices = _sys_devices()
    key = ("fstypes", tuple(d["name"] for d in devices))  # probed again when the devices change
    fstypes = _recent.get(key) or _recent.put(key, _fstypes())  # (blkid reads every device: not at every poll)
    lvs = {}
    if lvm.available():
        try:
            lvs = {os.path.realpath(v.path): v for v in lvm.volumes()}
        except lvm.LvmError:
            lvs = {}
    found = []
    for d in devices:
        path = f"/dev/{d['name']}"
        lv = lvs.get(path)
        if d["kind"] == "dm":
            if d["dm_uuid"].startswith("LVM-") and (lv is None or lv.snapshot or "-" in d["dm_uuid"][4:]):
                continue  # an LVM internal (snapshot, -cow/-real/-tpool): not a volume of its own
            path = lv.path if lv else f"/dev/mapper/{d['dm_name']}"
        if d["size"] == 0 or not _listed(confinement, path, d["name"]):
            continue
        m = mounted.get(d["rdev"])
        found.append({"path": path, "kind": "lvm" if lv else "part" if d["kind"] == "part" else "disk",
                      "size": d["size"], "name": lv.lv if lv else d["name"],
                      "parent": f"/dev/{d['parent']}" if d["parent"] else "",
                      "mountpoint": m.mountpoint if m else "",
                      "fstype": fstypes.get(f"/dev/{d['name']}") or fstypes.get(path) or (m.fstype if m else ""),
                      "vg": lv.vg if lv else "", "lv": lv.lv if lv else "", "vg_free": lv.vg_free if lv else 0})
    return found


def _listed(confinement: Confinement, path: str, name: str) -> bool:
    if name.startswith(_VIRTUAL):
        explicit = [p for p in confinement.devices if p not in _CATCH_ALL]
        return Confinement(confinement.roots, explicit).device_allowed(path)
    return confinement.device_allowed(path)


def images(confinement: Confinement, deadline: float, limit: int = 1000) -> tuple[list[dict], list[dict], bool]:
    """Raw image files below the roots (no symlink followed), images refused, and whether the walk finished."""
    found, refused = [], []
    for root in confinement.roots:
        try:
            fd = confinement.open_dir(root)
        except (OSError, PathSwapped):
            continue
        try:
            for top, dirs, files, dir_fd in walk_below(fd):
                if top.count("/") >= IMAGE_DEPTH:
                    dirs[:] = []
                for f in files:
                    if time.monotonic() > deadline or len(found) + len(refused) >= limit:
                        return found, refused, False
                    suffix = os.path.splitext(f)[1].lower()
                    if suffix not in IMAGE_SUFFIXES and suffix not in REFUSED_SUFFIXES:
                        continue
                    try:
                        st = os.stat(f, dir_fd=dir_fd, follow_symlinks=False)
                    except OSError:
                        continue
                    if not stat.S_ISREG(st.st_mode):
                        continue
                    path = os.path.normpath(os.path.join(root, top, f))
                    if suffix in REFUSED_SUFFIXES:
                        refused.append({"path": path, "reason": REFUSED_SUFFIXES[suffix]})
                    else:
                        found.append({"path": path, "kind": "image", "size": st.st_size, "name": f, "parent": "",
                                      "mountpoint": "", "fstype": "", "vg": "", "lv": "", "vg_free": 0})
        finally:
            os.close(fd)
    return found, refused, True


def path_report(confinement: Confinement, dir_path: str, exclude: list[str], deadline: float) -> dict:
    """Whether a directory the service asked about exists (below a root) and roughly how large it is."""
    report = {"dir_path": dir_path, "exists": False, "size_estimate": 0, "complete": True}
    try:
        fd = confinement.open_dir(dir_path)
    except FileNotFoundError:
        return report
    except (OSError, PathSwapped) as e:
        return {**report, "error": str(e)}
    report["exists"] = True
    key = ("size", dir_path, tuple(sorted(exclude or [])))
    generation = _recent.generation()
    known = _recent.get(key)
    if known is not None:
        os.close(fd)
        return {**report, **known}
    skip = {os.path.normpath(e) for e in exclude or []}
    total = 0
    try:
        for top, dirs, files, dir_fd in walk_below(fd):
            here = os.path.normpath(os.path.join(dir_path, top))
            dirs[:] = [d for d in dirs if os.path.join(here, d) not in skip]
            for f in files:
                if os.path.join(here, f) in skip:
                    continue
                try:
                    total += os.stat(f, dir_fd=dir_fd, follow_symlinks=False).st_size
                except OSError:
                    pass
            if time.monotonic() > deadline:
                report["complete"] = False
                break
    finally:
        os.close(fd)
    report["size_estimate"] = total
    return _recent.put(key, report, generation)  # an incomplete walk too: it would stop at the same deadline again


def access() -> dict:
    """What the agent can reach as it runs, and what it would need for the rest."""
    root = os.geteuid() == 0
    needs = [] if root else ["reading and writing block devices needs root (or membership of the disk group)",
                             "LVM snapshots and fsfreeze need root (CAP_SYS_ADMIN)"]
    return {"root": root, "user": os.geteuid(), "lvm": lvm.available(), "needs": needs}


def inventory(confinement: Confinement, paths: list[dict] | None = None, *, api_host: str | None = None,
              budget_seconds: float = 10.0) -> dict:
    deadline = time.monotonic() + budget_seconds
    disks = block_devices(confinement)
    key = ("images", tuple(confinement.roots))
    generation = _recent.generation()
    imgs, refused, complete = _recent.get(key) or _recent.put(key, images(confinement, deadline - budget_seconds / 2),
                                                              generation)
    reports = [path_report(confinement, p.get("dir_path", ""), p.get("exclude_paths") or [],
                           min(deadline, time.monotonic() + 2.0)) for p in paths or []]
    return {"host": host(api_host), "block_devices": disks + imgs, "refused": refused, "images_complete": complete,
            "paths": reports, "access": access()}
