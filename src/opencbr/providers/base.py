"""What the services ask of whatever holds the resources they protect: a *provider*.

A provider offers disks, servers and file systems and does everything that touches them: the paths a
tenant may name (inventory), whether a resource is there and what it is (probe), a consistent view of
it at one point in time for a backup (read view), somewhere to write a restore (an existing disk or
directory, or a new disk or file system it creates), and a server's power state. The services hold
what the catalog knows (names, owners, statuses) and never look at a resource themselves, so a
resource's ``provider`` column alone says who holds it (see :mod:`opencbr.providers.registry`).

What crosses this interface is small: resource types as the domain names them (``R.DISK``,
``R.FILE_SYSTEM``), paths as the tenant gave them, the identity recorded at registration (an opaque
dict the provider made), and open objects (:class:`Opened`, :class:`ReadView`) whose descriptors the
engine reads and writes without knowing where they came from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

# Defined with the confinement helpers (the agent raises it too); re-exported: the providers' error.
from opencbr.system.beneath import PathSwapped  # noqa: F401


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do, declared once (as restic's backends declare theirs): the services ask
    only for what is declared, and the contract tests (tests/providers) check each declared item."""

    #: The resource types it offers (``R.DISK``, ``R.SERVER``, ``R.FILE_SYSTEM``).
    resource_types: frozenset[str]
    #: It creates new disks and new file systems to restore into (guide 6.4, 6.5).
    new_disks: bool
    new_file_systems: bool
    #: It stops and starts servers itself; without, a server's power state is the catalog's alone.
    power: bool
    #: It can quiesce what writes a resource (freeze, then thaw) around a read view, making it
    #: application-consistent; without, a read view is at best crash-consistent.
    freeze: bool
    #: Its resources' data is read and written where it lives (an agent's host): the services do not
    #: open them but hand the task to the provider with the vault (:mod:`opencbr.providers.agent`).
    reads_on_host: bool = False


@dataclass(frozen=True)
class Probe:
    """A resource found where it was named: its size (0 for a file system: counting a tree is a
    measurement, see :meth:`Opened.measure`) and the identity later opens must match."""

    size: int
    identity: dict


@dataclass(frozen=True)
class PathState:
    """What is at a path a new disk or file system is to be made at (looked up, not opened)."""

    exists: bool
    is_directory: bool  # (or leads to one)
    empty_directory: bool
    parent_is_directory: bool


@runtime_checkable
class Opened(Protocol):
    """A disk or a directory tree opened for a task, checked (allowed, the registered object). ``fd``
    is what the engine reads or writes; ``path`` names it in messages and manifests."""

    path: str
    fd: int
    created: bool

    def identity(self) -> dict:
        """What tells this object from another one at the same path (recorded after each task)."""

    def size(self) -> int | None:
        """A disk's capacity; None for a directory tree (see :meth:`measure`)."""

    def measure(self, *, budget_seconds: float | None = None,
                stop: Callable[[], bool] | None = None) -> tuple[int, bool]:
        """The bytes a tree's files hold, and whether all were counted within ``budget_seconds`` (and
        before ``stop()``, asked a few times a second, turned true)."""

    def is_empty(self) -> bool:
        """A directory holds nothing."""

    def set_size(self, size: int) -> None:
        """Give a new disk its capacity (before the restore writes it)."""

    def copy_permissions(self, source_path: str | None) -> None:
        """A new disk, once complete, takes the permissions of the disk it was made from."""

    def remove_created(self) -> None:
        """Take away what the open created (a new disk, a new directory and what was put in it)."""

    def attached_loops(self) -> list[str]:
        """The loop devices a disk image is attached to (mounted, perhaps): in use, not to be written."""

    def close(self) -> None: ...

    def __enter__(self) -> Opened: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class ReadView(Protocol):
    """The disks of one backup at one point in time: ``sources`` holds a descriptor per disk, in the
    order they were given; ``describe()`` says how the point in time was obtained (recorded in the
    backup, so a user knows what consistency they have)."""

    sources: list[int]

    def describe(self) -> dict: ...

    def close(self) -> None: ...


@runtime_checkable
class Provider(Protocol):
    """One holder of resources. Its methods raise :class:`PathSwapped` when what is at a path may not
    be used (refused), ``FileNotFoundError`` or another ``OSError`` when it cannot be reached, and the
    domain's ``InvalidParameter`` for a path the tenant may not name."""

    name: str
    capabilities: Capabilities

    # -------------------------------------------------------------------------------- inventory
    def normal_path(self, path: object) -> str:
        """A path as the tenant gave it, made normal without looking anything up."""

    def check_allowed(self, path: str) -> None:
        """Refuse a path outside the places the provider lets tenants use (``InvalidParameter``)."""

    def real_path(self, path: str) -> str:
        """Where a normal path really leads (a symlink may lead elsewhere)."""

    def ancestors(self, path: str) -> list[str]:
        """Every place above a normal path (a resource there holds this one: the overlap rule)."""

    def path_state(self, path: str) -> PathState: ...

    # -------------------------------------------------------------------------------- probe
    @staticmethod
    def present(rtype: str, path: str) -> bool:
        """Cheaply, for a live status shown on every listing: is something usable at ``path``? A static
        method: it needs no configuration and makes no connection (a provider that cannot tell without
        one answers True, and its tasks record what they find)."""

    def probe(self, rtype: str, path: str) -> Probe:
        """Open the resource at ``path`` as a task would, and say what it is."""

    # -------------------------------------------------------------------------------- open
    def open(self, rtype: str, path: str, identity: dict | None = None, *, write: bool = False,
             create: bool = False) -> Opened:
        """A disk or a directory tree for a backup (read), a restore (``write``) or a new disk or file
        system (``create``), checked again every time and, given ``identity``, the registered object."""

    def read_view(self, disks: list[Opened], *, server_running: bool) -> ReadView:
        """All ``disks`` at one point in time: frozen first where the provider can (``capabilities
        .freeze``), the point in time taken, thawed at once."""

    # -------------------------------------------------------------------------------- power
    def set_power(self, server_id: str, *, running: bool) -> None:
        """Start or stop a server (its catalog id) where the provider runs servers (``capabilities
        .power``); the catalog records the new state either way."""
