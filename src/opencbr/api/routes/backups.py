"""CBR v3 checkpoint and backup routes (CBR v3 API 6.3), and OpenCBR's extensions: verify,
export (download the raw image), create a disk from a backup."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Query
from fastapi.responses import StreamingResponse

from opencbr.api import wire
from opencbr.api.deps import get_ctx, principal
from opencbr.api.routes import common as L
from opencbr.api.routes.common import page
from opencbr.api.routing import JSONRoute, catalog_read
from opencbr.domain import backup as B
from opencbr.domain import resource as R
from opencbr.domain.errors import InvalidParameter
from opencbr.services import audit, backups, files, images, recovery, replication, restore, sharing
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}", route_class=JSONRoute)


@router.post("/checkpoints")
def create_checkpoint(body: wire.CheckpointCreateBody, p: Principal = Depends(principal),
                      ctx: ServiceContext = Depends(get_ctx)):
    """Back up resources of a vault now (manual backups; the scheduler makes the automatic ones)."""
    params = wire.dump(body.checkpoint.parameters) if body.checkpoint.parameters else {}
    if params.get("auto_trigger"):
        raise InvalidParameter("auto_trigger is set by the scheduler; manual backups cannot claim it")
    with audit.trace(ctx, p, "createVaultBackup", {"vault_id": body.checkpoint.vault_id, **params},
                     resource_id=body.checkpoint.vault_id) as t, ctx.tx() as s:
        view = backups.create_checkpoint(s, ctx, p, body.checkpoint.vault_id, params)
        t.resource(view.vault.id, view.vault.name)
    return {"checkpoint": wire.checkpoint_resp(view.checkpoint, view.vault, view.backups)}


@router.get("/checkpoints/{checkpoint_id}")
def show_checkpoint(checkpoint_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        cp, vault, rows = backups.show_checkpoint(s, p, checkpoint_id)
    return {"checkpoint": wire.checkpoint_resp(cp, vault, rows)}


@router.get("/backups")
@catalog_read
def list_backups(checkpoint_id: str | None = None, vault_id: str | None = None, resource_id: str | None = None,
                 resource_name: str | None = None, resource_type: str | None = None, resource_az: str | None = None,
                 name: str | None = None, status: list[str] | None = Query(None), image_type: str | None = None,
                 parent_id: str | None = None, start_time: str | None = None, end_time: str | None = None,
                 limit: int | None = None, offset: int | None = None, marker: str | None = None,
                 sort: str | None = None, enterprise_project_id: str | None = None, own_type: str | None = None,
                 member_status: str | None = None, used_percent: str | None = None,
                 show_replication: bool | None = None, incremental: bool | None = None, dec: bool | None = None,
                 id: list[str] | None = Query(None),
                 p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """Guide 4.1: filter by status, name, id, vault, resource, type, replica or not, creation time. The list
    parameters follow the same rules as on every list (routes/common.py)."""
    limit, offset = page(limit, offset)
    order = L.parse_sort(sort, backups.SORT_KEYS)
    if resource_type:
        R.check_resource_type(resource_type)
    start, end = L.time_window(start_time, end_time)
    f = backups.BackupFilter(checkpoint_id=L.text(checkpoint_id, "checkpoint_id"), vault_id=L.text(vault_id, "vault_id"),
                             resource_id=L.text(resource_id, "resource_id"),
                             resource_name=L.text(resource_name, "resource_name"), resource_type=resource_type,
                             resource_az=L.text(resource_az, "resource_az"), name=L.text(name, "name"),
                             statuses=L.statuses(status, B.STATUSES), image_type=L.text(image_type, "image_type"),
                             parent_id=L.text(parent_id, "parent_id"), start_time=start, end_time=end,
                             incremental=incremental, ids=L.texts(id, "id"))
    with ctx.read() as s:
        views, total = sharing.list_backups(s, p, f, own_type, member_status, limit=limit, offset=offset,
                                            sort=order, marker=L.text(marker, "marker"))
        own = [v.view.backup for v in views if v.member is None]
        records = replication.records_of(s, ctx, [b.id for b in own]) if show_replication else {}
        imaged = images.image_ids(s, own)
    return {"backups": [_backup_resp(v, records, imaged) for v in views], "count": total, "limit": limit,
            "offset": offset}


def _backup_resp(v: sharing.SharedView, records: dict, imaged: dict) -> dict:
    """The caller's own backup with its replication records and image, or one shared with it (guide 4.2)."""
    if v.member is not None:
        return wire.shared_backup_resp(v.view.backup, v.view.children, v.member)
    b = v.view.backup
    return replication.with_records(wire.backup_resp(b, v.view.children, imaged.get(b.id)), records, b)


@router.get("/backups/{backup_id}")
@catalog_read
def show_backup(backup_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    with ctx.read() as s:
        v = sharing.show_backup(s, p, backup_id)
        own = v.member is None
        records = replication.records_of(s, ctx, [v.view.backup.id]) if own else {}
        imaged = images.image_ids(s, [v.view.backup]) if own else {}
    return {"backup": _backup_resp(v, records, imaged)}


@router.put("/backups/{backup_id}")
def update_backup(backup_id: str, body: wire.BackupUpdateBody, p: Principal = Depends(principal),
                  ctx: ServiceContext = Depends(get_ctx)):
    with ctx.tx() as s:
        v = backups.update_backup(s, ctx, p, backup_id, body.backup.name)
    return {"backup": wire.backup_resp(v.backup, v.children)}


@router.delete("/backups/{backup_id}")
def delete_backup(backup_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """Guide 4.3. The backup turns ``deleting``; the body names the task (the SDK ignores it)."""
    with audit.trace(ctx, p, "deleteBackup", resource_id=backup_id), ctx.tx() as s:
        task_id = backups.delete_backup(s, ctx, p, backup_id)
    return {"operation_log_id": task_id}


@router.post("/backups/{backup_id}/restore", status_code=202)
def restore_backup(backup_id: str, body: wire.BackupRestoreBody, p: Principal = Depends(principal),
                   ctx: ServiceContext = Depends(get_ctx)):
    spec = wire.dump(body.restore)
    with audit.trace(ctx, p, "restoreBackup", spec, resource_id=backup_id):
        with ctx.tx() as s:
            task_id = restore.restore_backup(s, ctx, p, backup_id, spec)
    return {"operation_log_id": task_id}


@router.get("/backups/{backup_id}/metadata")
def show_metadata(backup_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """The server and disk layout captured with a backup (JSON-in-string fields, as the API has them)."""
    with ctx.read() as s:
        v = backups.show_backup(s, p, backup_id)
    b = v.backup
    disks = [{"id": k.resource_id, "name": k.resource_name, "backup_id": k.id, "bootable": k.disk_role == "system",
              "size": R.size_gb(k.resource_size_bytes), "device_index": k.device_index} for k in v.children] or \
        [{"id": b.resource_id, "name": b.resource_name, "backup_id": b.id, "size": R.size_gb(b.resource_size_bytes)}]
    server = {"id": b.resource_id, "name": b.resource_name} if b.resource_type == R.SERVER else {}
    return {"backup_id": b.id, "backups": json.dumps([d["backup_id"] for d in disks]), "flavor": "{}",
            "floatingips": [], "interface": "[]", "ports": [], "server": json.dumps(server),
            "volumes": [json.dumps(d) for d in disks], "workspace": "{}"}


@router.post("/backups/{backup_id}/verify", status_code=202)
def verify_backup(backup_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """Extension: re-read every chunk of the backup; the task reports what is damaged."""
    with ctx.tx() as s:
        task_id = backups.verify_backup(s, ctx, p, backup_id)
    return {"operation_log_id": task_id}


@router.post("/backups/{backup_id}/create-disk", status_code=202)
def create_disk(backup_id: str, body: wire.CreateDiskFromBackup, p: Principal = Depends(principal),
                ctx: ServiceContext = Depends(get_ctx)):
    """Guide 6.4: a new disk from a disk backup (an image file at ``path`` on the service's machine, or on
    the host of agent ``agent_id``)."""
    with ctx.tx() as s:
        task_id, disk_id = restore.create_disk_from_backup(s, ctx, p, backup_id, name=body.name, path=body.path,
                                                           size_bytes=body.size_bytes, az=body.availability_zone,
                                                           agent_id=body.agent_id)
    return {"operation_log_id": task_id, "disk_id": disk_id}


@router.get("/backups/{backup_id}/export")
def export_backup(backup_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """Extension: download a disk backup as a raw image (13.7.6 says CBR cannot). A body shorter than
    its Content-Length is cut: by damage if it ends with the marker naming ``X-Export-Token``."""
    out = restore.export_stream(ctx, p, backup_id)
    return StreamingResponse(out.blocks, media_type="application/octet-stream",
                             headers={"Content-Length": str(out.size), "X-Export-Token": out.token,
                                      "Content-Disposition": f'attachment; filename="{backup_id}.img"'})


@router.get("/storage_usage")
def storage_usage(limit: int | None = None, offset: int | None = None, resource_id: str | None = None,
                  resource_type: str | None = None, p: Principal = Depends(principal),
                  ctx: ServiceContext = Depends(get_ctx)):
    limit, offset = page(limit, offset)
    if resource_type:
        R.check_resource_type(resource_type)
    with ctx.read() as s:
        rows, total = backups.resource_usage(s, p, resource_id=L.text(resource_id, "resource_id"),
                                             resource_type=resource_type, limit=limit, offset=offset)
    items = [{"resource_id": r["resource_id"], "resource_name": r["resource_name"],
              "resource_type": r["resource_type"], "backup_count": r["backup_count"],
              "backup_size": -(-r["backup_bytes"] // wire.MB), "backup_size_multiaz": 0}
             for r in rows]
    return {"resource_count": total, "storage_usage": items}



@router.post("/vaults/{vault_id}/rebuild")
def rebuild_vault(vault_id: str, p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """Extension (admins): recreate a vault's catalog from the manifests in the object store."""
    r = recovery.rebuild_vault(ctx, p, vault_id)
    return {"rebuild": {"vault_id": r.vault_id, "vault_created": r.vault_created, "backups_found": r.backups_found,
                        "backups_added": r.backups_added, "backups_present": r.backups_present}}


@router.get("/stored-vaults")
def stored_vaults(p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """Extension (operator): the vaults that have data in the object store, catalogued or not."""
    p.require_operator()
    return {"vault_ids": recovery.stored_vault_ids(ctx)}


@router.post("/backups/{backup_id}/create-file-system", status_code=202)
def create_file_system(backup_id: str, body: wire.CreateFileSystemFromBackup, p: Principal = Depends(principal),
                       ctx: ServiceContext = Depends(get_ctx)):
    """Guide 6.5: a new file system (a directory on the service's machine, or on the host of agent
    ``agent_id``) from a file-system backup."""
    with ctx.tx() as s:
        task_id, fs_id = files.create_file_system_from_backup(s, ctx, p, backup_id, name=body.name, path=body.path,
                                                              az=body.availability_zone, agent_id=body.agent_id)
    return {"operation_log_id": task_id, "file_system_id": fs_id}


@router.get("/backups/{backup_id}/files")
def list_files(backup_id: str, path: str = "/", p: Principal = Depends(principal),
               ctx: ServiceContext = Depends(get_ctx)):
    """Extension: browse a backup's files (13.2.15 says CBR cannot show backup data)."""
    return {"path": path, "entries": files.list_files(ctx, p, backup_id, path)}


@router.post("/backups/{backup_id}/restore-files", status_code=202)
def restore_files(backup_id: str, body: wire.RestoreFiles, p: Principal = Depends(principal),
                  ctx: ServiceContext = Depends(get_ctx)):
    """Extension: restore single files or directories of a file-system or disk backup to a directory."""
    with audit.trace(ctx, p, "restoreBackup", wire.dump(body), resource_id=backup_id):
        task_id = files.restore_files(ctx, p, backup_id, body.paths, body.destination_path, agent_id=body.agent_id)
    return {"operation_log_id": task_id}
