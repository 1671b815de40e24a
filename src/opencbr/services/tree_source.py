"""What a file system backup of this machine reads: the engine's directory source over the resource's
checked descriptor, sized from the catalog."""

from __future__ import annotations

import os

from opencbr.engine.tree.sources import DirectorySource


class ResourceTree(DirectorySource):
    """The directory of a file system resource, walked through its checked descriptor (never by its
    path, which may have been swapped since it was opened), with the size the catalog knows of it.

    With a known size (the registration's measure, the last backup) the progress total of a backup
    without a parent comes from it, as a replica's does from its source backup: no ``TreeScanner``
    (two more threads listing and stat'ing the whole tree beside the backup, ~1.5 s of a 6-11 s first
    backup of 62,000 entries on 2 cores; bench/README.md, realtree). The total is an estimate either
    way: the engine never lets it fall below what was already read."""

    def __init__(self, root_fd: int, size_hint: int):
        super().__init__(os.fsencode(f"/proc/self/fd/{root_fd}"))
        self.size_hint = max(0, size_hint)

    def scanner(self):
        return super().scanner() if self.size_hint == 0 else None
