"""A stand-in for lvm2's ``lvs``, ``lvcreate -s`` and ``lvremove`` where the kernel has no device-mapper
(this test machine: pvcreate/vgcreate work, but no logical volume can be activated). It keeps its volumes
in the JSON file ``$FAKE_LVM_STATE``: ``{"lvs": [{vg, lv, path, size, vg_free, attr, mount}], "calls": [...]}``.
``lvcreate`` records whether the origin's file system (``mount``) was frozen at that moment: FIFREEZE on a
frozen file system fails with EBUSY, so it tries, and thaws again at once if the freeze succeeded."""

from __future__ import annotations

import fcntl
import json
import os
import sys

FIFREEZE, FITHAW = 0xC0045877, 0xC0045878


def _frozen(mountpoint: str) -> bool:
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.ioctl(fd, FIFREEZE, 0)
    except OSError:
        return True
    else:
        fcntl.ioctl(fd, FITHAW, 0)
        return False
    finally:
        os.close(fd)


def main(cmd: str, args: list[str]) -> int:
    path = os.environ["FAKE_LVM_STATE"]
    with open(path) as f:
        state = json.load(f)
    state["calls"].append([cmd, *args])
    rc = 0
    if cmd == "lvs":
        rows = [{"lv_name": v["lv"], "vg_name": v["vg"], "lv_size": str(v["size"]), "lv_path": v["path"],
                 "vg_free": str(v["vg_free"]), "lv_attr": v["attr"]} for v in state["lvs"]]
        print(json.dumps({"report": [{"lv": rows}]}))
    elif cmd == "lvcreate":
        name = args[args.index("-n") + 1]
        vg, lv = args[-1].split("/")
        origin = next(v for v in state["lvs"] if (v["vg"], v["lv"]) == (vg, lv))
        frozen = _frozen(origin["mount"]) if origin.get("mount") else None
        state["calls"][-1].append({"frozen": frozen})
        state["lvs"].append({"vg": vg, "lv": name, "path": f"/dev/{vg}/{name}", "size": origin["size"],
                             "vg_free": origin["vg_free"], "attr": "swi-a-s---"})
    elif cmd == "lvremove":
        vg, lv = args[-1].split("/")
        left = [v for v in state["lvs"] if (v["vg"], v["lv"]) != (vg, lv)]
        if len(left) == len(state["lvs"]):
            print(f'  Failed to find logical volume "{vg}/{lv}"', file=sys.stderr)
            rc = 5
        state["lvs"] = left
    with open(path, "w") as f:
        json.dump(state, f)
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
