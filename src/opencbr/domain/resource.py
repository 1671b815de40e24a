"""Protectable resources: servers, disks and file systems, and the rules on their states.

The guide's ECS / EVS / SFS Turbo map to OpenCBR's server / disk / file system (docs/design.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from opencbr.domain.errors import InvalidParameter, StateConflict

SERVER = "OS::Nova::Server"
DISK = "OS::Cinder::Volume"
FILE_SYSTEM = "OS::Sfs::Turbo"
RESOURCE_TYPES = (SERVER, DISK, FILE_SYSTEM)

#: Vault ``billing.object_type`` for each resource type (guide 1.1: "Different types of resources must
#: be backed up to different types of vaults").
OBJECT_TYPE_OF = {SERVER: "server", DISK: "disk", FILE_SYSTEM: "turbo"}
RESOURCE_TYPE_OF = {v: k for k, v in OBJECT_TYPE_OF.items()}

#: ``provider_id`` of each resource type, as the public API reports them (CBR v3 API 4).
PROVIDER_ID = {
    SERVER: "0daac4c5-6707-4851-97ba-169e36266b66",
    DISK: "d1603440-187d-4516-af25-121250c7cc97",
    FILE_SYSTEM: "3f3c3220-245c-4805-b811-758870015881",
}

# Statuses of the local provider's resources.
DISK_STATUSES = ("available", "in-use", "restoring", "error")
SERVER_STATUSES = ("running", "stopped", "faulty")
FS_STATUSES = ("available", "restoring", "error")

#: Statuses in which a resource may be associated with a vault and backed up (guide 2.3 table 2-1,
#: 2.4.1, 2.4.2 and 1.6 "Only file systems in the Available state can be backed up").
PROTECTABLE_STATUSES = {
    SERVER: ("running", "stopped"),
    DISK: ("available", "in-use"),
    FILE_SYSTEM: ("available",),
}

#: The status string the protectables API shows for a server (the public service uses Nova's names).
SERVER_API_STATUS = {"running": "ACTIVE", "stopped": "SHUTOFF", "faulty": "ERROR"}

_NAME_RE = re.compile(r"^[^\x00-\x1f/\\]{1,255}$")
GB = 1024**3


def type_from_kind(kind: str) -> str:
    """Map the CLI/inventory kinds ``disk``, ``server``, ``fs`` to resource types."""
    kinds = {"disk": DISK, "server": SERVER, "fs": FILE_SYSTEM, "file-system": FILE_SYSTEM}
    if kind not in kinds:
        raise InvalidParameter(f"unknown resource kind {kind!r}; use disk, server or fs")
    return kinds[kind]


def check_resource_type(resource_type: str) -> str:
    if resource_type not in RESOURCE_TYPES:
        raise InvalidParameter(
            f"unsupported resource type {resource_type!r}; supported: {', '.join(RESOURCE_TYPES)}"
        )
    return resource_type


def check_resource_name(name: str) -> str:
    """Resource names: 1-255 printable characters without slashes."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidParameter("resource name must be 1 to 255 printable characters without '/' or '\\'")
    return name


def size_gb(size_bytes: int) -> int:
    """Sizes the API reports in GB are rounded up: a 1.5 GB disk takes 2 GB of vault capacity."""
    return -(-size_bytes // GB)


@dataclass(frozen=True)
class ResourceState:
    """The facts about a resource that vault and backup rules need."""

    id: str
    type: str
    name: str
    status: str
    region: str
    size_bytes: int
    encrypted: bool = False
    disk_count: int = 0  # servers: number of attached disks
    provider: str = ""  # "agent": a host an agent serves


#: Why an agent's host is a server without disks, and what to do: its agent opens only the block devices its
#: ``--device`` patterns allow (loop, ram and zram devices only when a pattern names them).
AGENT_NO_DISK_HINT = ("its agent found no block device its device patterns allow: register the agent again "
                      "with --device PATTERN for each disk it may read (e.g. --device '/dev/vd*')")


def check_protectable(res: ResourceState) -> None:
    """Guide 2.3 (table 2-1) and 2.2.1 step 5: only servers that are running or stopped, disks that are
    available or in use, and file systems that are available can be associated or backed up; a server
    needs at least one disk attached (2.3)."""
    allowed = PROTECTABLE_STATUSES[res.type]
    if res.status not in allowed:
        raise StateConflict(
            f"resource {res.name} ({res.id}) is {res.status}; it must be {' or '.join(allowed)}",
            code="BackupService.6102",
        )
    if res.type == SERVER and res.disk_count < 1:
        raise StateConflict(
            f"server {res.name} ({res.id}) has no disk attached; a server needs at least one disk"
            + (f" ({AGENT_NO_DISK_HINT})" if res.provider == "agent" else ""),
            code="BackupService.6103",
        )


#: Why a disk (or file system) is in error after a restore into it did not finish (failed, cancelled, or its
#: worker died): it holds a mix of old and restored data. Restoring it again repairs it (guide 6.3).
UNFINISHED_RESTORE = "a restore into it did not finish"


def unfinished_restore_reason(backup_name: str, why: str, res_type: str = DISK) -> str:
    again = "empty it and restore again" if res_type == FILE_SYSTEM else "restore it again"
    return f"{UNFINISHED_RESTORE} (backup {backup_name}: {why}); it holds a mix of old and restored data: {again}"


def repairable_by_restore(status: str, reason: str | None) -> bool:
    """A resource in error only because a restore into it did not finish may be restored again."""
    return status == "error" and (reason or "").startswith(UNFINISHED_RESTORE)


def settled_status(res_type: str, attached: bool) -> str:
    """The status of a disk or file system that nothing is happening to."""
    return "in-use" if res_type == DISK and attached else "available"
