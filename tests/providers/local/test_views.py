"""All disks of one backup at one point in time, and nothing left behind."""

from __future__ import annotations

import os

from opencbr.providers.local.opened import DISK, open_resource_path
from opencbr.providers.local.views import point_in_time_views


def test_point_in_time_views_read_the_opened_disks_and_leave_nothing_behind(place):
    roots, _ = place
    img = roots / "a" / "bd.img"
    with open_resource_path(str(img), DISK, (str(roots),)) as opened:
        views = point_in_time_views([opened], server_running=True)
        try:  # a clone where the file system can (XFS, btrfs), else the disk itself, read live
            assert views.method in ("reflink-snapshot", "live")
            assert os.pread(views.sources[0], 64 * 1024, 0) == img.read_bytes()
        finally:
            views.close()
    assert sorted(os.listdir(roots / "a")) == ["bd.img", "fs"]
