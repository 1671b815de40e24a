"""The service's error messages, said in the CLI's words: API field paths become the options that set them,
guide citations go (a user at a terminal wants the command to run, not a section to read), and the errors
a first-time user meets get the command that helps."""

from __future__ import annotations

import re

from opencbr.cli.client import ApiClient, ClientError

#: API fields and the CLI options that set them. Longest first, so ``billing.size`` is not read as ``size``.
FIELD_OPTIONS = {
    "billing.object_type": "--type", "billing.protect_type": "--protect-type",
    "billing.consistent_level": "--consistency", "billing.size": "--size", "object_type": "--type",
    "max_backups": "--keep", "retention_duration_days": "--days", "retention_duration_months": "--months",
    "day_backups": "--daily", "week_backups": "--weekly", "month_backups": "--monthly", "year_backups": "--yearly",
    "full_backup_interval": "--full-every", "start_window_minutes": "--start-window", "timezone": "--timezone",
    "operation_type": "--type", "destination_path": "--to", "volume_id": "--disk", "server_id": "--server",
    "mappings": "--map", "size_bytes": "--size", "availability_zone": "--az", "start_time": "--since",
    "end_time": "--until", "destination_region": "--destination-region",
    "destination_project_id": "--destination-project", "destination_vault_id": "--destination-vault",
    "auto_expand": "--auto-expand",
}
_FIELD = re.compile(r"(?<![\w.-])(" + "|".join(re.escape(f) for f in sorted(FIELD_OPTIONS, key=len, reverse=True))
                    + r")(?![\w.])")
#: The ``resources`` field as the service's messages name it (``resources[0].id``, "resources must be a
#: list"), not the English word: "associate resources first" stays as it is.
_RESOURCES_FIELD = re.compile(r"(?<![\w.])resources(?:\[\d+\](?:\.id)?|\.id|(?= must\b))(?![\w.\[])")
_GUIDE = re.compile(r"\s*\((see )?(the )?guide[ \d.,]*(chapter \d+)?\)|[;,]\s*see (the )?guide [\d.]+", re.I)
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def for_cli(message: str) -> str:
    """A server message with API field paths replaced by CLI options and guide citations removed."""
    message = _FIELD.sub(lambda m: FIELD_OPTIONS[m.group(1)], message)
    message = _RESOURCES_FIELD.sub("--resource", message)
    return _GUIDE.sub("", message).strip()


_CLI_KIND = {"disks": "disk", "file-systems": "fs", "servers": "server"}


def missing_resource(c: ApiClient, resource_id: str) -> str | None:
    """Why a resource cannot be used (its image file or directory gone, its agent offline or gone), and
    what to do about it."""
    for kind, what in (("disks", "disk image"), ("file-systems", "directory"), ("servers", "disks")):
        try:
            res = c.get(f"/inventory/{kind}/{resource_id}")["resource"]
        except ClientError:
            continue
        if res.get("status") in ("error", "faulty"):
            reason = res.get("status_reason") or f"the {what} {res.get('path', '')} is missing or cannot be read"
            return f"{res['name']}: {reason}; {_remedy(reason, _CLI_KIND[kind], res['id'])}"
    return None


def _remedy(reason: str, kind: str, resource_id: str) -> str:
    """What to do, by the service's reason (services/agents: state.offline_reason, the unregistered,
    uninstalled and removed-path reasons); the remove command names the id, which needs no quoting."""
    remove = f"cbr {kind} remove {resource_id}"
    if " is offline " in reason or " is not enrolled" in reason:
        return "start the agent on its host (systemctl start opencbr-agent), and back up once cbr agent list " \
               "shows it online"
    if " was unregistered" in reason or " was uninstalled" in reason:
        return f"enrol the host again (opencbr-agent register --force on it) and protect its new resources; or " \
               f"remove this one from the inventory ({remove})"
    if " was removed from agent " in reason:
        return f"add the path again (cbr agent path add HOST PATH: it is this resource again); or remove it ({remove})"
    return f"put it back, or remove it from the inventory ({remove})"


def explain_backup_error(c: ApiClient, e: ClientError) -> ClientError:
    """``backup create``: a resource in error is explained (a missing image, not "is error")."""
    ids = _UUID.findall(e.message)
    problem = missing_resource(c, ids[0]) if e.code == "BackupService.6102" and ids else None
    return ClientError(f"cannot back up {problem}", code=e.code) if problem else e


def _agent_of(c: ApiClient, fs_id: str | None) -> str | None:
    """The agent whose host a file system is on: its id, "" when that agent was unregistered, None for a
    directory of the service's own machines (or when the service does not say)."""
    if not fs_id:
        return None
    try:
        res = c.get(f"/inventory/file-systems/{fs_id}")["resource"]
    except ClientError:
        return None
    return (res.get("agent_id") or "") if "agent_id" in res else None


def explain_restore_error(c: ApiClient, e: ClientError, backup: dict, target_disk: str | None) -> ClientError:
    """``backup restore``: the errors a user meets restoring for the first time, with the command to use."""
    ref = backup.get("name") or backup["id"]
    if e.code == "BackupService.6429":
        # without --agent the new directory is made on the service's machine: a backup an agent read is
        # restored onto a host with --agent (its own, or another one while its agent is unregistered)
        agent = _agent_of(c, backup.get("resource_id"))
        where = "" if agent is None else f" --agent {agent or 'AGENT'}"
        return ClientError("a file-system backup is restored into a new file system, not over the original: "
                           f"cbr fs create-from-backup {ref} --name NAME{where} --path DIRECTORY"
                           + (" (a directory on that agent's host)" if where else ""), code=e.code)
    if e.code in ("BackupService.6410", "BackupService.6427"):
        return ClientError(f"{for_cli(e.message).rstrip('.')}: cbr disk create-from-backup {backup['id']} "
                           "--name NAME --path FILE", code=e.code)
    if e.code == "BackupService.6411":
        disk_id = target_disk or backup.get("resource_id")
        problem = missing_resource(c, disk_id) if disk_id else None
        if problem:
            return ClientError(f"cannot restore onto {problem}; or make a new disk from the backup: "
                               f"cbr disk create-from-backup {backup['id']} --name NAME --path FILE", code=e.code)
        try:
            disk = c.get(f"/inventory/disks/{disk_id}")["resource"]
        except ClientError:
            return e
        if disk.get("server_id"):
            return ClientError(f"disk {disk['name']} is part of a server: restore the server's backup "
                               f"(cbr backup restore SERVER_BACKUP --server {disk['server_id']}), or make a new "
                               f"disk from this one (cbr disk create-from-backup {backup['id']} --name NAME "
                               "--path FILE)", code=e.code)
        return ClientError(f"disk {disk['name']} is {disk['status']}; it must be available to be restored",
                           code=e.code)
    return e
