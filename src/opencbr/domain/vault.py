"""Vault rules of the guide (chapters 1.6, 2.2, 2.3, 3, 13.3 and 13.7.1), in one place.

Each function enforces one rule and names its section. The services layer loads the facts from the
catalog and calls these; nothing here does I/O.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from opencbr.domain import tags as T
from opencbr.domain.errors import InvalidParameter, QuotaExceeded, StateConflict
from opencbr.domain.resource import (
    OBJECT_TYPE_OF,
    SERVER,
    ResourceState,
    check_protectable,
    size_gb,
)

OBJECT_TYPES = ("server", "disk", "turbo")
PROTECT_TYPES = ("backup", "replication")
CONSISTENT_LEVELS = ("crash_consistent", "app_consistent")
CHARGING_MODES = ("post_paid", "pre_paid")
CLOUD_TYPES = ("public", "hybrid")
PERIOD_TYPES = ("year", "month")
VAULT_STATUSES = ("available", "locked", "deleting", "error")

MIN_CAPACITY_GB = 10
MAX_CAPACITY_GB = 10_485_760
MAX_RESOURCES_PER_VAULT = 256
MAX_DESCRIPTION = 255
MAX_TAGS = T.MAX_TAGS

_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def check_vault_name(name: object) -> str:
    """Guide 2.2.1 step 8: a vault name has 1 to 64 characters: digits, letters, underscores (_) or
    hyphens (-)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidParameter(
            "vault name must be 1 to 64 characters of letters, digits, underscores (_) or hyphens (-)",
            code="BackupService.6201",
        )
    return name


def default_vault_name(rng: random.Random | None = None) -> str:
    """Guide 2.2.1 step 8 note: the default name is ``vault_`` followed by four digits."""
    r = rng or random.SystemRandom()
    return "vault_%04d" % r.randrange(10_000)


def check_description(description: object) -> str:
    """Descriptions are at most 255 characters (SDK model docs; guide 2.4.1 table 2-2 for backups)."""
    if description is None:
        return ""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise InvalidParameter("description must be a string of at most 255 characters", code="BackupService.6202")
    return description


def check_capacity(size: object) -> int:
    """Guide 2.2.1 step 6, 2.2.2 step 4, 2.2.3 step 5: vault capacity is 10 to 10,485,760 GB."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise InvalidParameter("billing.size must be an integer number of GB", code="BackupService.6203")
    if not MIN_CAPACITY_GB <= size <= MAX_CAPACITY_GB:
        raise InvalidParameter(
            f"vault capacity must be between {MIN_CAPACITY_GB} and {MAX_CAPACITY_GB:,} GB, got {size}",
            code="BackupService.6203",
        )
    return size


def check_capacity_change(current_gb: int, new_gb: int, used_bytes: int, status: str) -> int:
    """Guide 3.4: capacity is expanded by at least 1 GB; 3.1 table 3-2: not while the vault is locked.
    Shrinking is allowed down to what the backups use (CBR v3 API 6.1 convention), never below 10 GB."""
    check_capacity(new_gb)
    if new_gb == current_gb:
        return new_gb
    if status == "locked":
        raise StateConflict("the capacity of a locked vault cannot be changed", code="BackupService.6204")
    if new_gb < current_gb and new_gb < size_gb(used_bytes):
        raise InvalidParameter(
            f"vault capacity cannot be reduced to {new_gb} GB: its backups use {size_gb(used_bytes)} GB",
            code="BackupService.6205",
        )
    return new_gb


def check_billing_enums(object_type: object, protect_type: object, consistent_level: object,
                        charging_mode: object = "post_paid", cloud_type: object = "public",
                        period_type: object = None) -> None:
    """The billing enumerations of the CBR API (CBR v3 API 4)."""
    for field, value, allowed in (
        ("billing.object_type", object_type, OBJECT_TYPES),
        ("billing.protect_type", protect_type, PROTECT_TYPES),
        ("billing.consistent_level", consistent_level, CONSISTENT_LEVELS),
        ("billing.charging_mode", charging_mode, CHARGING_MODES),
        ("billing.cloud_type", cloud_type, CLOUD_TYPES),
    ):
        if value not in allowed:
            raise InvalidParameter(f"{field} must be one of {', '.join(allowed)}, got {value!r}",
                                   code="BackupService.6206")
    if period_type is not None and period_type not in PERIOD_TYPES:
        raise InvalidParameter("billing.period_type must be year or month", code="BackupService.6206")


def check_consistency_for_type(object_type: str, consistent_level: str) -> None:
    """Guide 2.2.1 step 4 and 3.5: application-consistent backup exists only for server vaults."""
    if consistent_level == "app_consistent" and object_type != "server":
        raise InvalidParameter("application-consistent backup is only available for server vaults",
                               code="BackupService.6207")


def check_consistency_change(object_type: str, current: str, new: str, status: str) -> str:
    """Guide 3.5: a server vault's specification changes from server backup (crash-consistent) to
    application-consistent backup, never the other way; 3.1 table 3-2: not while the vault is locked."""
    if new == current:
        return new
    check_consistency_for_type(object_type, new)
    if current == "app_consistent" and new == "crash_consistent":
        raise InvalidParameter(
            "vault specifications can only change from server backup to application-consistent backup, "
            "not the other way around", code="BackupService.6208")
    if status == "locked":
        raise StateConflict("the specifications of a locked vault cannot be changed", code="BackupService.6204")
    return new


def check_short_text(field: str, value: object, max_len: int) -> str:
    """Free-text fields the API echoes (enterprise project id, name prefix, lock source): strings of
    limited length."""
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > max_len:
        raise InvalidParameter(f"{field} must be a string of at most {max_len} characters", code="BackupService.6001")
    return value


def check_threshold(threshold: object) -> int:
    """Capacity alarm threshold: 1 to 100 percent (SDK model docs)."""
    if isinstance(threshold, bool) or not isinstance(threshold, int) or not 1 <= threshold <= 100:
        raise InvalidParameter("threshold must be an integer from 1 to 100", code="BackupService.6209")
    return threshold


def check_tags(tags: object) -> list[dict[str, str]]:
    """Tags at creation: at most 10, unique keys, and a list that is not empty when given (the rules of
    ``domain.tags``)."""
    if tags is None:
        return []
    return T.check_tag_list(tags)


def spec_code(object_type: str, protect_type: str, consistent_level: str, cloud_type: str = "public") -> str:
    """The public service's spec code for a vault (CBR v3 API 4)."""
    if cloud_type == "hybrid":
        return "vault.hybrid.server.normal"
    if protect_type == "replication":
        return "vault.replication.server.normal"
    if object_type == "server":
        return "vault.backup.database.normal" if consistent_level == "app_consistent" else "vault.backup.server.normal"
    return {"disk": "vault.backup.volume.normal", "turbo": "vault.backup.turbo.normal"}[object_type]


# ------------------------------------------------------------------------------------ association
@dataclass(frozen=True)
class VaultState:
    id: str
    object_type: str
    protect_type: str
    region: str
    size_gb: int
    status: str
    encrypted: bool
    resource_count: int
    associated_size_bytes: int


def check_vault_accepts_changes(vault: VaultState) -> None:
    """Guide 3.1 table 3-2: a deleting vault or one in error accepts no new resources."""
    if vault.status in ("deleting", "error"):
        raise StateConflict(f"vault {vault.id} is {vault.status}", code="BackupService.6211")


def check_add_resources(vault: VaultState, resources: Sequence[ResourceState],
                        bound_elsewhere: Iterable[str], already_here: Iterable[str]) -> None:
    """All rules for associating resources with a vault, in the order a user meets them:

    - guide 2.2.1 step 3: a replication vault stores replicas; no resources are associated with it;
    - guide 1.1 / CBR v3 API 6.1: the resource type must match the vault's object type;
    - guide 1.6 and 2.3: the vault and its resources are in the same region;
    - guide 2.3 table 2-1: resource statuses that allow association; a server needs a disk;
    - guide 2.2.1 step 5 note / CBR v3 API 6.1: a resource is in at most one backup vault;
    - guide 1.2 / issue 4: encrypted disks are only protected in encrypted vaults;
    - guide 1.6 and 2.3: a vault has at most 256 resources;
    - guide 2.3: the total size of the associated resources cannot exceed the vault capacity.
    """
    check_vault_accepts_changes(vault)
    if vault.protect_type == "replication":
        raise InvalidParameter("a replication vault stores replicas; resources cannot be associated with it",
                               code="BackupService.6212")
    if not resources:
        raise InvalidParameter("no resources given", code="BackupService.6001")
    ids = [r.id for r in resources]
    dupes = {i for i in ids if ids.count(i) > 1}
    if dupes:
        raise InvalidParameter(f"resource listed more than once: {', '.join(sorted(dupes))}",
                               code="BackupService.6001")
    elsewhere = set(bound_elsewhere)
    here = set(already_here)
    for r in resources:
        if OBJECT_TYPE_OF[r.type] != vault.object_type:
            raise InvalidParameter(
                f"resource {r.name} is a {r.type}; a {vault.object_type} vault only takes "
                f"{[t for t, o in OBJECT_TYPE_OF.items() if o == vault.object_type][0]} resources",
                code="BackupService.6213")
        if r.region != vault.region:
            raise InvalidParameter(f"resource {r.name} is in region {r.region}, the vault in {vault.region}; "
                                   "they must be in the same region", code="BackupService.6214")
        if r.id in here:
            raise StateConflict(f"resource {r.name} ({r.id}) is already associated with this vault",
                                code="BackupService.6215")
        if r.id in elsewhere:
            raise StateConflict(f"resource {r.name} ({r.id}) is already associated with another vault",
                                code="BackupService.6216")
        check_protectable(r)
        if r.encrypted and not vault.encrypted:
            raise InvalidParameter(f"resource {r.name} is encrypted; its backups must go to an encrypted vault",
                                   code="BackupService.6217")
    if vault.resource_count + len(resources) > MAX_RESOURCES_PER_VAULT:
        raise QuotaExceeded(
            f"a vault can be associated with at most {MAX_RESOURCES_PER_VAULT} resources "
            f"(it has {vault.resource_count}, adding {len(resources)})", code="BackupService.6218")
    total = vault.associated_size_bytes + sum(r.size_bytes for r in resources)
    if size_gb(total) > vault.size_gb:
        raise QuotaExceeded(
            f"the associated resources would total {size_gb(total)} GB, more than the vault capacity of "
            f"{vault.size_gb} GB; expand the vault first", code="BackupService.6219")


def check_server_disk_selection(server: ResourceState, disk_ids: Sequence[str], extra_info: dict) -> dict:
    """Guide 2.2.1 step 5: specific disks of a server can be chosen (``include_volumes`` /
    ``exclude_volumes`` of ResourceCreate.extra_info). Every id must be a disk of that server, and at
    least one disk must remain."""
    if not extra_info:
        return {}
    if server.type != SERVER:
        raise InvalidParameter("extra_info (disk selection) only applies to servers", code="BackupService.6220")
    include = [v.get("id") if isinstance(v, dict) else None for v in extra_info.get("include_volumes") or []]
    exclude = list(extra_info.get("exclude_volumes") or [])
    for i in include + exclude:
        if i not in disk_ids:
            raise InvalidParameter(f"{i!r} is not a disk of server {server.name}", code="BackupService.6220")
    chosen = [d for d in disk_ids if (not include or d in include) and d not in exclude]
    if not chosen:
        raise InvalidParameter(f"the disk selection leaves no disk of server {server.name} to back up",
                               code="BackupService.6220")
    out: dict = {}
    if include:
        out["include_volumes"] = [{"id": i, "os_version": ""} for i in include]
    if exclude:
        out["exclude_volumes"] = exclude
    return out


def check_vault_deletable(status: str) -> None:
    """Guide 3.2: a vault can be deleted only when it is Available or Error."""
    if status not in ("available", "error"):
        raise StateConflict(f"a vault can only be deleted when it is available or in error; it is {status}",
                            code="BackupService.6221")
