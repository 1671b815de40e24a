"""Paths as tenants name them: made normal and compared by component, without touching the disk."""

from __future__ import annotations

from opencbr.providers.local import paths


def test_paths_compare_by_component_after_normalising():
    assert paths.normal_path("//srv/./a/../a/fs/") == "/srv/a/fs"
    assert paths.within("/srv/a/fs/sub", "/srv/a/fs") and paths.within("/srv/a/fs", "/srv/a/fs")
    assert not paths.within("/srv/a/fsx", "/srv/a/fs") and not paths.overlaps("/srv/a/fsx", "/srv/a/fs")
    assert paths.overlaps("/srv", "/srv/a/fs") and paths.overlaps("/", "/srv")
    assert paths.ancestors("/srv/a/fs") == ["/", "/srv", "/srv/a"]
