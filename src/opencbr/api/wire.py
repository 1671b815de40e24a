"""The wire format: Pydantic models of request bodies and functions that shape responses, field for
field as the official SDK reads them (the CBR v3 API reference (docs/api.md), section 5).

Request models fix the *shape*: types, nesting, and outer bounds on every list, string and integer
(so that no request can make the service hold or loop over unbounded input, and a 400 names the field).
The rules on values (a vault name's 64 characters, 10 tags, 256 resources) live in ``domain`` and
``services``; the outer bounds here are never tighter than those, so their messages still apply.
"""

from __future__ import annotations

import posixpath
import re
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from opencbr.catalog.models import AuditEvent, Resource, Task
from opencbr.domain import resource as R
from opencbr.services import policies
from opencbr.services.resources import ResourceView
from opencbr.services.vaults import VaultView

MB = 1024 * 1024


class Wire(BaseModel):
    # Unknown fields are ignored, as the public service does; the SDK adds new optional fields over time.
    model_config = ConfigDict(extra="ignore")


# ------------------------------------------------------------------------------------ outer bounds
#: An id (uuid, 32-hex project id, access key) or a short code.
Id = Annotated[str, StringConstraints(max_length=64)]
#: A name or a short text field (descriptions are 255 at most by the guide).
Text = Annotated[str, StringConstraints(max_length=1024)]
#: A path on the service's machine or inside a backup (Linux PATH_MAX).
PathText = Annotated[str, StringConstraints(max_length=4096)]
def _whole_number(value: Any) -> Any:
    """A JSON number, or a string of decimal digits (as some clients send them), and nothing else that
    Python's ``int`` would take: not ``true`` (1), nor ``"1_000"`` or ``" ٣ "`` (digits of other scripts)."""
    if isinstance(value, bool):
        raise ValueError("a number is expected, not true or false")
    if isinstance(value, str) and not _DECIMAL.fullmatch(value):
        raise ValueError("a whole number is expected (decimal digits)")
    return value


_DECIMAL = re.compile(r"[+-]?[0-9]+")
#: Counts, sizes in GB, days, percentages.
Int = Annotated[int, BeforeValidator(_whole_number), Field(ge=-(2**31), le=2**31 - 1)]
#: A size in bytes (an exbibyte is beyond any disk).
Bytes = Annotated[int, BeforeValidator(_whole_number), Field(ge=0, le=2**60)]
#: Free-form JSON objects (a policy, resource details) are at most this deep, long and wide.
MAX_JSON_DEPTH, MAX_JSON_ITEMS, MAX_JSON_STRING = 8, 100, 1024


def _bounded_json(value: Any, depth: int = 0) -> Any:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"nested more than {MAX_JSON_DEPTH} levels deep")
    if isinstance(value, str) and len(value) > MAX_JSON_STRING:
        raise ValueError(f"a string is longer than {MAX_JSON_STRING} characters")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        raise ValueError("an integer is out of range")
    if isinstance(value, (list, dict)):
        if len(value) > MAX_JSON_ITEMS:
            raise ValueError(f"a list or object has more than {MAX_JSON_ITEMS} items")
        for item in [*value.keys(), *value.values()] if isinstance(value, dict) else value:
            _bounded_json(item, depth + 1)
    return value


#: A JSON object whose fields the domain checks (a policy body), bounded in size here.
JsonObject = Annotated[dict[str, Any], AfterValidator(_bounded_json)]


def _unique(values: list) -> list:
    """No value twice; paths count as the same when they name the same place (``/a/`` and ``/a``)."""
    seen = set()
    for v in values:
        key = posixpath.normpath(v) if isinstance(v, str) and v.startswith("/") else v
        if key in seen:
            raise ValueError(f"{str(v)[:80]!r} is given more than once")
        seen.add(key)
    return values


def Items(item, max_items: int, *, unique: bool = False):  # noqa: N802 - a type factory
    """A list of at most ``max_items`` ``item`` values (distinct when ``unique``)."""
    checks = [AfterValidator(_unique)] if unique else []
    return Annotated[list[item], Field(max_length=max_items), *checks]


# ------------------------------------------------------------------------------------ requests
class Tag(Wire):
    key: Text
    value: Text | None = None


class BindRules(Wire):
    tags: Items(Tag, 100) | None = None


class IncludeVolume(Wire):
    id: Id
    os_version: Text | None = None


class ResourceExtraInfo(Wire):
    exclude_volumes: Items(Id, 64, unique=True) | None = None
    include_volumes: Items(IncludeVolume, 64) | None = None


class ResourceCreate(Wire):
    id: Id
    type: Id
    name: Text | None = None
    extra_info: ResourceExtraInfo | None = None


class BillingCreate(Wire):
    consistent_level: Id | None = None
    object_type: Id
    protect_type: Id | None = None
    size: Int
    cloud_type: Id | None = None
    charging_mode: Id | None = None
    period_type: Id | None = None
    period_num: Int | None = None
    is_auto_renew: bool | None = None
    is_auto_pay: bool | None = None
    console_url: Text | None = None
    is_multi_az: bool | None = None


#: A vault holds at most 256 resources (guide 1.6); one request may name no more.
MAX_RESOURCES = 256


class VaultCreate(Wire):
    name: Text | None = None
    billing: BillingCreate
    resources: Items(ResourceCreate, MAX_RESOURCES) = Field(default_factory=list)
    description: Text | None = None
    backup_policy_id: Id | None = None
    tags: Items(Tag, 100) | None = None
    enterprise_project_id: Id | None = None
    auto_bind: bool | None = None
    bind_rules: BindRules | None = None
    auto_expand: bool | None = None
    threshold: Int | None = None
    smn_notify: bool | None = None
    backup_name_prefix: Text | None = None
    demand_billing: bool | None = None
    sys_lock_source_service: Text | None = None
    locked: bool | None = None
    availability_zone: Id | None = None
    #: OpenCBR extension: false creates a vault whose data is stored unencrypted.
    encrypted: bool | None = None


class VaultCreateBody(Wire):
    vault: VaultCreate


class BillingUpdate(Wire):
    consistent_level: Id | None = None
    size: Int | None = None


class VaultUpdate(Wire):
    name: Text | None = None
    description: Text | None = None
    billing: BillingUpdate | None = None
    auto_bind: bool | None = None
    bind_rules: BindRules | None = None
    auto_expand: bool | None = None
    smn_notify: bool | None = None
    threshold: Int | None = None
    locked: bool | None = None


class VaultUpdateBody(Wire):
    vault: VaultUpdate


class AddResourcesBody(Wire):
    resources: Items(ResourceCreate, MAX_RESOURCES)


class RemoveResourcesBody(Wire):
    resource_ids: Items(Id, MAX_RESOURCES, unique=True)


# Inventory (OpenCBR extension)
class DiskRegister(Wire):
    name: Text
    path: PathText
    availability_zone: Id | None = None
    encrypted: bool = False
    description: Text | None = None
    host: Id | None = None  # the host (group) that holds the path; default: the API machine's


class ServerRegister(Wire):
    name: Text
    system_disk: Id
    #: A server has at most 60 disks attached (the public service's limit per ECS).
    data_disks: Items(Id, 60, unique=True) = Field(default_factory=list)
    availability_zone: Id | None = None
    status: Id = "running"
    description: Text | None = None


class FileSystemRegister(Wire):
    name: Text
    path: PathText
    availability_zone: Id | None = None
    description: Text | None = None
    host: Id | None = None  # the host (group) that holds the path; default: the API machine's


class ServerStatusUpdate(Wire):
    status: Id


# IAM (OpenCBR extension)
class ProjectCreate(Wire):
    name: Text
    account_id: Id | None = None


class UserCreate(Wire):
    name: Text
    role: Id = "member"


class CredentialCreate(Wire):
    user_name: Text | None = None
    description: Text | None = None


class AccountCreate(Wire):
    name: Text
    admin_name: Text = "admin"


class ConsoleLogin(Wire):
    access_key: Id
    secret_key: Text
    project_id: Id | None = None


class TrackerUpdate(Wire):
    enabled: bool


def dump(model: BaseModel) -> dict[str, Any]:
    """A request model as the plain dict the services take (unset fields left out)."""
    return model.model_dump(exclude_none=True)


# ------------------------------------------------------------------------------------ responses
def iso(dt: datetime | None) -> str | None:
    """ISO-8601 in UTC with microseconds and no zone designator (``2020-02-05T10:38:34.209782``), as
    the public service sends (CBR v3 API 1). The official SDK appends ``Z`` before parsing, so a time
    carrying ``+00:00`` would reach its users as an unparsed string: an aware time is converted here."""
    if dt is None:
        return None
    if dt.tzinfo is not None:
        dt = dt.astimezone(timezone.utc).replace(tzinfo=None)
    return dt.isoformat(timespec="microseconds")


def iso_z(dt: datetime | None) -> str | None:
    """``2020-02-23T01:00:32Z``, the operation-log time format."""
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ") if dt else None


def vault_resp(view: VaultView) -> dict[str, Any]:
    v = view.vault
    resources = []
    for b in view.resources:
        resources.append({
            "id": b.resource_id,
            "name": b.name,
            "type": b.type,
            "protect_status": "available" if b.status not in ("error", "faulty") else "error",
            "size": R.size_gb(b.size_bytes),
            "backup_size": R.size_gb(b.backup_bytes),
            "backup_count": b.backup_count,
            "auto_protect": b.auto_protect,
            "extra_info": b.extra_info or None,
        })
    return {
        "id": v.id,
        "name": v.name,
        "description": v.description,
        "project_id": v.project_id,
        "provider_id": R.PROVIDER_ID[R.RESOURCE_TYPE_OF[v.object_type]],
        "user_id": v.user_id,
        "created_at": iso(v.created_at),
        "updated_at": iso(v.updated_at),
        "billing": {
            "allocated": R.size_gb(view.allocated_bytes),
            "charging_mode": v.charging_mode,
            "cloud_type": v.cloud_type,
            "consistent_level": v.consistent_level,
            "object_type": v.object_type,
            "order_id": "",
            "product_id": "",
            "protect_type": v.protect_type,
            "size": v.size_gb,
            "spec_code": v.spec_code,
            "status": v.status,
            "storage_unit": "",
            "used": -(-(v.used_bytes + (v.shared_bytes or 0)) // MB),
            "frozen_scene": "",
            "is_multi_az": v.is_multi_az,
        },
        "resources": resources,
        "tags": v.tags or [],
        "enterprise_project_id": v.enterprise_project_id,
        "auto_bind": v.auto_bind,
        "bind_rules": v.bind_rules or {},
        "auto_expand": v.auto_expand,
        "smn_notify": v.smn_notify,
        "threshold": v.threshold,
        "sys_lock_source_service": v.sys_lock_source_service,
        "locked": v.locked,
        "availability_zone": v.availability_zone,
        "backup_name_prefix": v.backup_name_prefix,
        "demand_billing": v.demand_billing,
        "cbc_delete_count": 0,
        "frozen": False,
        "encrypted": v.encrypted,
        "used_bytes": v.used_bytes + (v.shared_bytes or 0),
        "shared_bytes": v.shared_bytes or 0,
        "policy_ids": view.policy_ids,
    }



def external_vault_resp(v: dict, region: str) -> dict[str, Any]:
    """A vault of a linked region as list_external_vault shows it (a Vault; the destination region said
    what it holds: ``services.replication.external_vaults``). ``region`` (an extension) names the region."""
    return {
        "id": v.get("id"), "name": v.get("name"), "project_id": v.get("project_id"), "description": "",
        "provider_id": R.PROVIDER_ID.get(R.RESOURCE_TYPE_OF.get(v.get("object_type"), ""), ""),
        "created_at": v.get("created_at"), "resources": [], "tags": [], "auto_bind": False, "auto_expand": False,
        "billing": {"object_type": v.get("object_type"), "protect_type": v.get("protect_type"),
                    "size": v.get("size_gb"), "used": -(-int(v.get("used_bytes") or 0) // MB),
                    "status": v.get("status"), "consistent_level": v.get("consistent_level"),
                    "cloud_type": "public", "charging_mode": "post_paid", "allocated": 0},
        "region": v.get("region") or region,
    }

def _disk_info(d: Resource) -> dict[str, Any]:
    return {"id": d.id, "name": d.name, "path": d.path, "size": R.size_gb(d.size_bytes), "size_bytes": d.size_bytes,
            "role": d.disk_role, "device_index": d.device_index, "availability_zone": d.availability_zone,
            "encrypted": d.encrypted}


def inventory_resp(view: ResourceView) -> dict[str, Any]:
    """A resource as the inventory API and the CLI show it."""
    r = view.resource
    out: dict[str, Any] = {
        "id": r.id, "name": r.name, "type": r.type, "status": view.status, "status_reason": r.status_reason or "",
        "region": r.region,
        "availability_zone": r.availability_zone, "description": r.description,
        "created_at": iso(r.created_at), "updated_at": iso(r.updated_at),
        "vault_id": view.vault.id if view.vault else None, "tags": r.tags or [],
    }
    if r.type == R.SERVER:
        out["size_bytes"] = sum(d.size_bytes for d in view.disks)
        out["disks"] = [_disk_info(d) for d in view.disks]
    else:
        out.update(path=r.path, size_bytes=r.size_bytes, host=r.host, status_reason=r.status_reason)
        if r.type == R.DISK:
            out.update(encrypted=r.encrypted, server_id=r.server_id, role=r.disk_role)
    if r.provider == "agent":  # on an agent's host: which agent (null once it was unregistered)
        out["agent_id"] = r.agent_id
    out["size"] = R.size_gb(out["size_bytes"])
    return out


def protectable_resp(view: ResourceView, vault_view: VaultView | None) -> dict[str, Any]:
    """A ProtectablesResp: the resource, its own state, and whether it can be protected now."""
    r = view.resource
    status = R.SERVER_API_STATUS.get(view.status, view.status) if r.type == R.SERVER else view.status
    ok_status = view.status in R.PROTECTABLE_STATUSES[r.type]
    if vault_view is not None:
        result, code, reason = False, "BackupService.6216", "the resource is already associated with a vault"
    elif not ok_status:
        result, code, reason = False, "BackupService.6102", f"the resource is {view.status}" + (
            f": {r.status_reason}" if r.status_reason else "")
    elif r.type == R.SERVER and not view.disks:
        result, code, reason = False, "BackupService.6103", "the server has no disk attached" + (
            f": {R.AGENT_NO_DISK_HINT}" if r.provider == "agent" else "")
    else:
        result, code, reason = True, "", ""
    vault = None
    if vault_view is not None:
        vault = vault_resp(vault_view)
        vault["version"] = "1"
    size = sum(d.size_bytes for d in view.disks) if r.type == R.SERVER else r.size_bytes
    detail: dict[str, Any] = {"availability_zone": r.availability_zone, "region": r.region}
    if r.type != R.SERVER:
        detail["path"] = r.path
    if r.type == R.DISK:
        detail.update(encrypted=r.encrypted, server_id=r.server_id, bootable=r.disk_role == "system")
    return {
        "id": r.id, "name": r.name, "type": r.type, "status": status, "size": R.size_gb(size), "detail": detail,
        "children": [{"id": d.id, "name": d.name, "type": R.DISK, "size": R.size_gb(d.size_bytes),
                      "status": "in-use", "bootable": d.disk_role == "system"} for d in view.disks],
        "protectable": {"result": result, "code": code, "reason": reason, "message": reason, "vault": vault},
    }


def oplog_resp(t: Task) -> dict[str, Any]:
    """An OperationLog: ``error_info`` and ``extra_info.common`` are always present."""
    extra = dict(t.extra_info or {})
    common = {"progress": t.progress, "request_id": t.request_id, "task_id": t.id, **extra.get("common", {})}
    common["progress"] = t.progress
    extra["common"] = common
    if t.resource_id and "resource" not in extra:
        extra["resource"] = {"id": t.resource_id, "type": t.resource_type, "name": t.resource_name}
    return {
        "id": t.id, "project_id": t.project_id, "provider_id": t.provider_id, "operation_type": t.operation_type,
        "status": t.status, "checkpoint_id": t.checkpoint_id, "policy_id": t.policy_id, "vault_id": t.vault_id,
        "vault_name": t.vault_name, "created_at": iso_z(t.created_at), "started_at": iso_z(t.started_at),
        "ended_at": iso_z(t.ended_at), "updated_at": iso_z(t.updated_at),
        "error_info": {"code": t.error_code, "message": t.error_message},
        "extra_info": extra,
    }


def audit_resp(e: AuditEvent) -> dict[str, Any]:
    return {"id": e.id, "time": iso(e.time), "trace_name": e.trace_name, "resource_type": e.resource_type,
            "resource_id": e.resource_id, "resource_name": e.resource_name, "user_id": e.user_id,
            "user_name": e.user_name, "access_key": e.access_key, "project_id": e.project_id,
            "source_ip": e.source_ip, "outcome": e.outcome, "http_status": e.http_status,
            "error_code": e.error_code, "error_msg": e.error_message, "request_id": e.request_id,
            "request": e.request}


# ------------------------------------------------------------------------------------ backups
class CheckpointParam(Wire):
    resources: Items(Id, MAX_RESOURCES, unique=True) | None = None
    name: Text | None = None
    description: Text | None = None
    incremental: bool | None = None
    auto_trigger: bool | None = None
    policy_id: Id | None = None
    retention_duration_days: Int | None = None
    resource_details: Items(JsonObject, MAX_RESOURCES) | None = None


class CheckpointCreate(Wire):
    vault_id: Id
    parameters: CheckpointParam | None = None


class CheckpointCreateBody(Wire):
    checkpoint: CheckpointCreate


class ServerMapping(Wire):
    backup_id: Id
    volume_id: Id


class RestoreDetails(Wire):
    destination_path: PathText | None = None


class BackupRestore(Wire):
    volume_id: Id | None = None
    server_id: Id | None = None
    power_on: bool | None = None
    mappings: Items(ServerMapping, 64) | None = None
    resource_id: Id | None = None
    details: RestoreDetails | None = None


class BackupRestoreBody(Wire):
    restore: BackupRestore


class BackupUpdate(Wire):
    name: Text


class BackupUpdateBody(Wire):
    backup: BackupUpdate


class CreateDiskFromBackup(Wire):
    name: Text
    path: PathText
    size_bytes: Bytes | None = None
    availability_zone: Id | None = None
    agent_id: Id | None = None  # the new image on this agent's host (an extension)


def _app_consistency(details: dict) -> dict[str, Any]:
    """``app_consistency`` (an extension): asked by the vault, the consistency achieved and why not."""
    app = (details.get("consistency") or {}).get("app") if isinstance(details.get("consistency"), dict) else None
    return {"app_consistency": {"achieved": app.get("achieved"), "reason": app.get("reason") or ""}} if app else {}


def _what_was_not_read(details: dict) -> dict[str, Any]:
    """``partial`` and ``warning_count`` (extensions): a file-system backup that left out what it could
    not read (``partial``), and how many files it warned about (left out, changed or vanished while read).
    The backup keeps them for its whole life; its task, which names the files, is purged after 30 days.
    Counts only: a file's name is what is inside a backup (README, *Roles*)."""
    warnings = details.get("warnings")
    dropped = (details.get("stats") or {}).get("warnings_dropped") or 0
    count = (len(warnings) if isinstance(warnings, list) else 0) + (dropped if isinstance(dropped, int) else 0)
    return {"partial": bool(details.get("partial")), "warning_count": count}


def backup_resp(b, kids=(), image_id: str | None = None) -> dict[str, Any]:
    """A BackupResp. ``logical_bytes`` and ``added_bytes`` (extensions) show each backup's size and what it
    added to the vault (guide 13.2.14 says CBR cannot). ``image_id``: the image made from it (guide 6.2)."""
    details = b.details or {}
    system = b.disk_role == "system" or any(k.disk_role == "system" for k in kids)
    return {
        "id": b.id, "name": b.name, "description": b.description, "checkpoint_id": b.checkpoint_id,
        "parent_id": b.parent_id, "project_id": b.project_id, "vault_id": b.vault_id,
        "provider_id": R.PROVIDER_ID.get(b.resource_type, ""), "resource_id": b.resource_id,
        "resource_name": b.resource_name, "resource_type": b.resource_type,
        "resource_size": R.size_gb(b.resource_size_bytes), "resource_az": b.resource_az,
        "image_type": b.image_type, "status": b.status, "created_at": iso(b.created_at),
        "updated_at": iso(b.updated_at), "expired_at": iso(b.expired_at), "protected_at": iso(b.protected_at),
        "scheduled_operation_id": b.policy_id or None, "enterprise_project_id": "0", "incremental": b.incremental,
        "version": 1, "replication_records": [],
        "children": [backup_resp(k) for k in kids],
        "extend_info": {
            "auto_trigger": b.auto_trigger, "bootable": system, "snapshot_id": "", "support_lld": False,
            "supported_restore_mode": "backup",
            "os_images_data": [{"image_id": image_id}] if image_id else [], "contain_system_disk": system,
            "encrypted": b.encrypted, "system_disk": b.disk_role == "system", "is_multi_az": False,
            **_app_consistency(details),
        },
        "logical_bytes": b.logical_bytes, "added_bytes": b.added_bytes, "full": b.full_requested,
        "used_by_image": bool(b.used_by_image),  # an image was made from it (guide 6.2: it cannot be deleted)
        "consistency": details.get("consistency"), "disk_role": b.disk_role, "device_index": b.device_index,
        **_what_was_not_read(details),
        "error_info": {"code": b.error_code, "message": b.error_message} if b.error_code or b.error_message else None,
        "task_id": b.task_id,
    }


def checkpoint_resp(cp, vault, backups, bound_resources: dict | None = None) -> dict[str, Any]:
    """A CheckpointCreate (note the string-typed sizes, as the public API sends them)."""
    resources = []
    for b in backups:
        resources.append({"id": b.resource_id, "name": b.resource_name, "type": b.resource_type,
                          "protect_status": b.status, "extra_info": "{}",
                          "resource_size": str(R.size_gb(b.resource_size_bytes)),
                          "backup_size": str(R.size_gb(b.added_bytes)), "backup_count": "1", "backup_id": b.id})
    return {
        "id": cp.id, "project_id": cp.project_id, "status": cp.status, "created_at": iso(cp.created_at),
        "vault": {"id": vault.id, "name": vault.name, "resources": resources,
                  "skipped_resources": cp.skipped or []},
        "extra_info": {"name": cp.name, "description": cp.description,
                       "retention_duration": cp.retention_duration_days if cp.retention_duration_days else -1},
    }


class CreateFileSystemFromBackup(Wire):
    name: Text
    path: PathText
    availability_zone: Id | None = None
    agent_id: Id | None = None  # the new directory on this agent's host (an extension)


#: Paths one restore-files request may name: a directory brings everything below it, so a long list is
#: never needed, and each path is looked up in the backup before the task is accepted.
MAX_RESTORE_PATHS = 100


class RestoreFiles(Wire):
    paths: Items(PathText, MAX_RESTORE_PATHS, unique=True) = Field(min_length=1)
    destination_path: PathText
    agent_id: Id | None = None  # the destination is on this agent's host (an extension)


# ------------------------------------------------------------------------------------ policies
# The policy document itself (name, operation_type, enabled, operation_definition, trigger) is CBR's
# policy model: domain.policy parses it (its rules are stated in its fields, guide 5.2 / 5.3) and renders
# it (PolicySpec.to_document), because the catalog stores it in that form. Here: the envelopes around it.
class PolicyBody(Wire):
    """``{"policy": {...}}``; the fields are checked by ``domain.policy`` (clearer messages than a schema)."""

    policy: JsonObject


class AssociateBody(Wire):
    policy_id: Id | None = None
    destination_vault_id: Id | None = None
    add_policy_ids: Items(Id, 16, unique=True) | None = None


class DissociateBody(Wire):
    policy_id: Id


class PruneBody(Wire):
    vault_id: Id


def policy_resp(view: policies.PolicyView) -> dict[str, Any]:
    """A Policy (CBR v3 API 5)."""
    pol, doc = view.policy, view.spec.to_document()
    # ``start_time`` as the public service writes it: ``2020-01-08 09:59:49`` (UTC)
    props = {**doc["trigger"]["properties"], "start_time": pol.trigger_start.strftime("%Y-%m-%d %H:%M:%S")}
    return {
        "id": pol.id,
        "name": doc["name"],
        "enabled": doc["enabled"],
        "operation_type": doc["operation_type"],
        "policy_type": "custom_policy",
        "operation_definition": doc["operation_definition"],
        "trigger": {"id": pol.trigger_id, "name": "default", "type": "time", "properties": props},
        "associated_vaults": [{"vault_id": b.vault_id, "destination_vault_id": b.destination_vault_id or None}
                              for b in view.bindings],
        "created_at": iso(pol.created_at),
        "updated_at": iso(pol.updated_at),
        # OpenCBR's: set when an organization policy deployed it (the project cannot change or delete it)
        "organization_policy_id": view.organization_policy_id or None,
    }


def binding_resp(b) -> dict[str, Any]:
    return {"vault_id": b.vault_id, "policy_id": b.policy_id, "destination_vault_id": b.destination_vault_id or None}


def preview_resp(policy_id: str, pv) -> dict[str, Any]:
    """OpenCBR extension: the next execution times, in UTC and in the policy's time zone."""
    tz = pv.spec.tz
    return {"policy_id": policy_id, "timezone": pv.spec.timezone or "UTC+00:00",
            "executions": [{"execution_id": r.execution_id,
                            "scheduled_at": r.scheduled_at.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                            "local_time": r.scheduled_at.astimezone(tz).strftime("%Y-%m-%d %H:%M %a")}
                           for r in pv.runs]}


def execution_resp(e) -> dict[str, Any]:
    """OpenCBR extension: one execution decision the scheduler recorded."""
    return {"execution_id": e.execution_id, "vault_id": e.vault_id, "scheduled_at": iso_z(e.scheduled_at),
            "decided_at": iso_z(e.fired_at), "decision": e.decision, "reason": e.reason,
            "checkpoint_id": e.checkpoint_id or None, "scheduler_id": e.scheduler_id}


def retention_resp(r: policies.ResourceRetention) -> dict[str, Any]:
    """OpenCBR extension: a retention dry run or prune of one resource's backups, with the reasons."""
    backups = []
    for v in r.plan.verdicts:
        b = v.backup
        backups.append({
            "backup_id": b.id, "backup_name": r.names.get(b.id, ""), "created_at": iso_z(b.created_at),
            "automatic": b.automatic, "status": b.status, "prune": v.prune,
            "reasons": [{"code": x.code, "text": x.text} for x in v.reasons],
            "overridden": [{"code": x.code, "text": x.text} for x in v.overridden],
            "explain": v.explain(),
        })
    return {"vault_id": r.vault_id, "resource_id": r.resource_id, "resource_name": r.resource_name,
            "policy_id": r.policy_id, "prune_count": len(r.plan.prune_ids), "backups": backups,
            "deleted": [{"backup_id": bid, "delete_task_id": tid} for bid, tid in r.deleted],
            "retention_task_id": r.task_id}


# ------------------------------------------------------------------------------------ sharing (guide 4.2)
class MembersAdd(Wire):
    members: Items(Id, 100) | None = None
    domains: Items(Id, 100) | None = None


class MemberUpdate(Wire):
    status: Id
    vault_id: Id | None = None


def member_resp(m) -> dict[str, Any]:
    """A Member: its ``id`` is the project the backup is shared with (the ``member_id`` of its routes)."""
    return {"id": m.dest_project_id, "backup_id": m.backup_id, "dest_project_id": m.dest_project_id,
            "status": m.status, "vault_id": m.vault_id, "image_id": m.image_id or None,
            "created_at": iso(m.created_at), "updated_at": iso(m.updated_at)}


def shared_backup_resp(b, kids, member) -> dict[str, Any]:
    """A backup shared with the caller, as the recipient sees it: the backup, in the recipient's vault that
    accepted it (none while pending or rejected); nothing that names the sharer's vault, checkpoint,
    policy or tasks. ``member_status`` (an extension) is the recipient's answer."""
    vault_id = member.vault_id if member.status == "accepted" else None

    def hide(out: dict) -> dict:
        out.update(vault_id=vault_id, checkpoint_id="", scheduled_operation_id=None, task_id="", error_info=None)
        return out

    out = hide(backup_resp(b, kids))
    out["children"] = [hide(k) for k in out["children"]]
    out["member_status"] = member.status
    return out
