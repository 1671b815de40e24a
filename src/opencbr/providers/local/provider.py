"""The local provider behind :class:`opencbr.providers.base.Provider`: what the services ask, answered
with the paths, opens and views of this package, confined to the operator's ``resource_roots``."""

from __future__ import annotations

import os

from opencbr.domain import resource as R
from opencbr.providers.base import Capabilities, PathState, Probe
from opencbr.providers.local import paths
from opencbr.providers.local.opened import (
    DIRECTORY,
    DISK,
    OpenedPath,
    directory_present,
    disk_present,
    open_resource_path,
)
from opencbr.providers.local.views import PointInTimeViews, point_in_time_views

_KIND = {R.DISK: DISK, R.FILE_SYSTEM: DIRECTORY}


class LocalProvider:
    """Disks (image files, block devices), servers (named sets of disks) and file systems (directory
    trees) by path on the machines of this host group; ``roots``: the directories tenants' resources
    must lie below (none: anywhere, for a single-owner installation)."""

    name = "local"
    capabilities = Capabilities(resource_types=frozenset(R.RESOURCE_TYPES), new_disks=True, new_file_systems=True,
                                power=False,  # a server here is its disks: nothing runs to start or stop
                                freeze=False)  # nothing to ask to flush: views are crash-consistent at best

    def __init__(self, *, roots: tuple[str, ...] = ()):
        self.roots = tuple(roots)

    # ---------------------------------------------------------------------------- inventory
    def normal_path(self, path: object) -> str:
        return paths.normal_path(path)

    def check_allowed(self, path: str) -> None:
        paths.check_allowed(path, self.roots)

    def real_path(self, path: str) -> str:
        return os.path.realpath(path)

    def ancestors(self, path: str) -> list[str]:
        return paths.ancestors(path)

    def path_state(self, path: str) -> PathState:
        exists, is_directory = os.path.lexists(path), os.path.isdir(path)
        return PathState(exists=exists, is_directory=is_directory,
                         empty_directory=is_directory and _nothing_in(path),
                         parent_is_directory=os.path.isdir(os.path.dirname(path)))

    # ---------------------------------------------------------------------------- probe
    @staticmethod
    def present(rtype: str, path: str) -> bool:
        return disk_present(path) if _KIND[rtype] == DISK else directory_present(path)

    def probe(self, rtype: str, path: str) -> Probe:
        with self.open(rtype, path) as opened:
            return Probe(size=opened.size() or 0, identity=opened.identity())

    # ---------------------------------------------------------------------------- open
    def open(self, rtype: str, path: str, identity: dict | None = None, *, write: bool = False,
             create: bool = False) -> OpenedPath:
        return open_resource_path(path, _KIND[rtype], self.roots, identity, write=write, create=create)

    def read_view(self, disks: list[OpenedPath], *, server_running: bool) -> PointInTimeViews:
        """No freeze (``capabilities.freeze``): the point in time is taken at once, see
        :func:`point_in_time_views`."""
        return point_in_time_views(disks, server_running=server_running)

    # ---------------------------------------------------------------------------- power
    def set_power(self, server_id: str, *, running: bool) -> None:
        """Nothing to do (``capabilities.power``): a local server is a set of disk files that no
        process of ours runs; its power state is what the catalog records, and what decides whether a
        backup clones its disks (a running server writes them)."""


def _nothing_in(directory: str) -> bool:
    """(A directory that cannot be listed is not known to be empty.)"""
    try:
        return not os.listdir(directory)
    except OSError:
        return False
