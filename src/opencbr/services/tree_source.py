"""What a file system backup of this machine reads: the engine's directory source over the resource's
checked descriptor, sized from the catalog."""

from __future__ import annotations

import os

from opencbr.engine.tree.sources import DirectorySource


class ResourceTree(DirectorySource):
    """The directory of a file system resource, walked through its checked descriptor (never by its
    path, which may have been swapped since it was opened), with the size the catalog knows of it.

    With a known size (the registration's measure, the last backup) the progress total of a backup
    without a parent comes from it, as a replica's does from its source backup; with none, from what
    the walk's listings have seen so far. Never a ``TreeScanner`` (listing and stat'ing the whole tree
    a second time beside the backup, ~1 CPU s and up to 1.5 s of a 6-11 s first backup of 62,000
    entries on 2 cores; bench/README.md, realtree). The total is an estimate either way: the engine
    never lets it fall below what was already read. (From the listings it trails the truth by what is
    not listed yet: up to ``TreeWalker.MAX_PREFETCH_ENTRIES`` entries ahead of the reads, so the
    percentage of a large tree runs high until its last directories are listed.)"""

    def __init__(self, root_fd: int, size_hint: int):
        super().__init__(os.fsencode(f"/proc/self/fd/{root_fd}"), listing_total=True)
        self.size_hint = max(0, size_hint)

    def scanner(self):
        """With no size known (a backup asked before the registration's count ended): the total of what
        the walk has listed so far (``ListingTally``), not a second walk of the tree beside it."""
        return None if self.size_hint else super().scanner()
