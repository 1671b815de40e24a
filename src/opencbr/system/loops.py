"""The loop devices an image file backs (``/sys/block/loop*/loop/backing_file``): a restore must not write
an image that is attached (and perhaps mounted), on an agent's host or the service's own."""

from __future__ import annotations

import os


def loop_devices_backed_by(fd: int, sys_block: str = "/sys/block") -> list[str]:
    """The loop devices (``/dev/loopN``) whose backing file is the open file ``fd``: an image attached
    with ``losetup`` or mounted is in use, though opening the file itself never says so (only a block
    device's exclusive open does). Matched by device and inode, not by name (the file may have been
    moved since it was attached); a loop whose file was deleted backs nothing that can be opened."""
    st = os.fstat(fd)
    found = []
    try:
        names = sorted(n for n in os.listdir(sys_block) if n.startswith("loop"))
    except OSError:
        return []
    for name in names:
        try:
            with open(os.path.join(sys_block, name, "loop", "backing_file"), encoding="utf-8",
                      errors="surrogateescape") as f:
                backing = f.read().rstrip("\n")
            other = os.stat(backing)
        except OSError:  # (no loop/ directory: not attached; a deleted backing file)
            continue
        if (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino):
            found.append(f"/dev/{name}")
    return found
