"""``TreeWalker``: the directory tree in catalog order, one ``lstat`` per entry.

Depth-first pre-order, siblings sorted by name bytes: exactly the order of
:func:`~opencbr.engine.tree.entry.path_key`, so the backup can merge-join the walk with the parent
backup's catalog (streamed in the same order) instead of loading either into memory. Memory is one
sorted sibling list per level of the current path.

Symlinks are never followed. With ``one_file_system`` (the default) a directory on another device
(a mount point inside the tree) is recorded but not entered, like ``--one-file-system`` in restic and
borg: a file-system backup is one file system. Problems never stop the walk: a directory that cannot
be listed is reported (and makes the backup partial), an entry that vanished between listing and
``lstat`` is reported as a plain warning.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from typing import Callable, Iterator


@dataclass
class WalkItem:
    path: bytes  # relative to the root, '/'-separated; b"" for the root itself
    abspath: bytes
    st: os.stat_result


Warn = Callable[[bytes, str, bool], None]


def _show(path: bytes) -> str:
    return os.fsdecode(path) if path else "."


class TreeWalker:
    def __init__(self, root: str | bytes | os.PathLike, warn: Warn, *, one_file_system: bool = True):
        self.root = os.path.abspath(os.fsencode(root))
        self.warn = warn
        self.one_file_system = one_file_system

    def _children(self, abspath: bytes, rel: bytes) -> list[tuple[bytes, bytes, os.stat_result]]:
        out = []
        try:
            with os.scandir(abspath) as it:
                ents = list(it)
        except OSError as e:
            self.warn(rel, f"cannot list directory: {e.strerror or e}", True)
            return out
        ents.sort(key=lambda d: d.name)
        for d in ents:
            crel = rel + b"/" + d.name if rel else d.name
            try:
                st = d.stat(follow_symlinks=False)
            except FileNotFoundError:
                self.warn(crel, "vanished during the backup", False)
                continue
            except OSError as e:
                self.warn(crel, f"cannot stat: {e.strerror or e}", True)
                continue
            out.append((crel, d.path, st))
        return out

    def __iter__(self) -> Iterator[WalkItem]:
        st = os.lstat(self.root)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(f"{os.fsdecode(self.root)} is not a directory")
        dev = st.st_dev
        yield WalkItem(b"", self.root, st)
        stack = [iter(self._children(self.root, b""))]
        while stack:
            item = next(stack[-1], None)
            if item is None:
                stack.pop()
                continue
            rel, ap, cst = item
            yield WalkItem(rel, ap, cst)
            if stat.S_ISDIR(cst.st_mode):
                if self.one_file_system and cst.st_dev != dev:
                    self.warn(rel, "mount point of another file system: recorded, not entered", False)
                    continue
                stack.append(iter(self._children(ap, rel)))
