"""Disk images over the chunk store: a disk is a fixed index of equal blocks (``fixed_index``), read
from a file or block device (``source``), backed up (``backup``), restored, exported and verified
(``restore``)."""
