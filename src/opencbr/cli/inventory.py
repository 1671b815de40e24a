"""``cbr disk|server|fs``: the resource inventory of the local provider."""

from __future__ import annotations

import os

import typer

from opencbr.cli import refs
from opencbr.cli.output import JSON_OPTION, YES_OPTION, client, confirm, details, handle_errors, print_json, table
from opencbr.cli.params import AZ_OPTION, BACKUP_ARG, DISK_ARG, FS_ARG, NAME_FILTER, SERVER_ARG, WAIT_OPTION
from opencbr.cli.waiting import raise_if_failed, wait_for
from opencbr.domain import resource as R

disk_app = typer.Typer(help="Disks: disk-image files and block devices.", no_args_is_help=True)
server_app = typer.Typer(help="Servers: a system disk and data disks with a power state.", no_args_is_help=True)
fs_app = typer.Typer(help="File systems: directory trees.", no_args_is_help=True)

_COLS = [("id", "ID"), ("name", "Name"), ("status", "Status"), ("size", "Size (GB)"),
         ("availability_zone", "AZ"), ("vault_id", "Vault")]
_KIND_PATH = {R.DISK: "disks", R.SERVER: "servers", R.FILE_SYSTEM: "file-systems"}


_KINDS = {"disks": refs.DISK, "servers": refs.SERVER, "file-systems": refs.FILE_SYSTEM}


def resolve(kind: str, ref: str) -> str:
    """A resource id from an id, a unique name or a unique id prefix."""
    return refs.resolve(client(), _KINDS[kind], ref)


def _show(obj: dict, as_json: bool) -> None:
    if as_json:
        print_json(obj)
        return
    fields = [("id", "ID"), ("name", "Name"), ("type", "Type"), ("status", "Status"), ("size", "Size (GB)"),
              ("size_bytes", "Size (bytes)"), ("path", "Path"), ("availability_zone", "AZ"),
              ("encrypted", "Encrypted"), ("server_id", "Server"), ("vault_id", "Vault"),
              ("created_at", "Created")]
    if obj.get("status") in ("error", "faulty"):  # say why, in words: a missing file is the usual cause
        what = {"OS::Sfs::Turbo": "directory", "OS::Nova::Server": "disks"}.get(obj.get("type"), "image file")
        default = f"its {what} {'are' if what == 'disks' else 'is'} missing or cannot be read"
        obj = {**obj, "status": f"{obj['status']}: {obj.get('status_reason') or default}"}
    details(obj, [f for f in fields if f[0] in obj])
    if obj.get("disks"):
        table(obj["disks"], [("id", "Disk ID"), ("name", "Name"), ("role", "Role"), ("size", "GB"), ("path", "Path")])


def _list(kind: str, as_json: bool, name: str | None) -> None:
    data = client().get(f"/inventory/{kind}", name=name)
    if as_json:
        print_json(data["resources"])
    else:
        table(data["resources"], _COLS, title=f"{data['count']} {kind}")


HOST_HELP = ("The host (setting host_group) whose workers can reach PATH, when it is not the API's machine: "
             "a worker there checks the path, and only workers there back it up or restore it.")


# ------------------------------------------------------------------------------------ disks
@disk_app.command("register")
@handle_errors
def disk_register(name: str = typer.Option(..., "--name", help="A name for the disk."),
                  path: str = typer.Option(..., "--path", help="The image file or block device (on the service's "
                                                               "machine)."),
                  az: str = AZ_OPTION,
                  encrypted: bool = typer.Option(False, "--encrypted", help="Mark the disk as encrypted (only "
                                                                             "encrypted vaults then take it)."),
                  description: str = typer.Option("", "--description", help="Free text shown with it."),
                  host: str = typer.Option(None, "--host", help=HOST_HELP), as_json: bool = JSON_OPTION):
    """Register a disk image file or block device.

    Example: cbr disk register --name data1 --path /srv/images/data1.img"""
    body = {"name": name, "path": path if host else os.path.abspath(path), "availability_zone": az,
            "encrypted": encrypted, "description": description, "host": host}
    _show(client().post("/inventory/disks", body)["disk"], as_json)


@disk_app.command("list")
@handle_errors
def disk_list(name: str = NAME_FILTER, as_json: bool = JSON_OPTION):
    """The registered disks."""
    _list("disks", as_json, name)


@disk_app.command("show")
@handle_errors
def disk_show(disk: str = DISK_ARG, as_json: bool = JSON_OPTION):
    """A disk: path, size, status, its server and the vault protecting it."""
    _show(client().get(f"/inventory/disks/{resolve('disks', disk)}")["resource"], as_json)


def _create_from_backup(backup_id: str, action: str, body: dict, *, made: tuple[str, str, str], wait: bool,
                        as_json: bool) -> None:
    """A new disk or file system from a backup; ``made``: its id's key in the answer, its inventory
    route and its id's label."""
    id_key, route, id_label = made
    c = client()
    out = c.post(f"/backups/{refs.resolve(c, refs.BACKUP, backup_id)}/{action}", body)
    if wait:
        raise_if_failed(wait_for(c, [out["operation_log_id"]], quiet=as_json))
    resource = c.get(f"/inventory/{route}/{out[id_key]}")["resource"]
    if as_json:
        print_json({**resource, "task_id": out["operation_log_id"]})
    else:
        details(resource, [("id", id_label), ("name", "Name"), ("status", "Status"), ("path", "Path"),
                           ("size_bytes", "Size (bytes)"), ("availability_zone", "AZ")])


AGENT_OPTION = typer.Option(None, "--agent", help="Create it on this agent's host (id or host name); --path "
                                                    "is then a path on that host.")


def _target_path(path: str, agent: str | None) -> str:
    return path if agent else os.path.abspath(path)  # a path on the agent's host is taken as written


def _agent_id(agent: str | None) -> str | None:
    from opencbr.cli import agents

    return agents.resolve(client(), agent) if agent else None


@disk_app.command("create-from-backup")
@handle_errors
def disk_create_from_backup(backup_id: str = BACKUP_ARG, name: str = typer.Option(..., "--name", help="Its name."),
                            path: str = typer.Option(..., "--path", help="The new disk image file."),
                            size: int = typer.Option(None, "--size", help="Bytes; at least the source disk's size."),
                            az: str = AZ_OPTION, agent: str = AGENT_OPTION, wait: bool = WAIT_OPTION,
                            as_json: bool = JSON_OPTION):
    """Create a new disk from a disk backup (a server backup's disk backups too: see cbr backup ls).

    Example: cbr disk create-from-backup DISK_BACKUP --name copy --path /srv/images/copy.img --wait"""
    _create_from_backup(backup_id, "create-disk", {"name": name, "path": _target_path(path, agent),
                                                   "size_bytes": size, "availability_zone": az,
                                                   "agent_id": _agent_id(agent)},
                        made=("disk_id", "disks", "Disk ID"), wait=wait, as_json=as_json)


@disk_app.command("remove")
@handle_errors
def disk_remove(disk: str = typer.Argument(..., help="Disk: id, name or id prefix."), yes: bool = YES_OPTION,
                as_json: bool = JSON_OPTION):
    """Remove a disk from the inventory (the file stays; its backups stay)."""
    rid = resolve("disks", disk)
    confirm(f"Remove disk {disk} ({rid}) from the inventory?", yes)
    client().delete(f"/inventory/disks/{rid}")
    print_json({"removed": rid}) if as_json else typer.echo(f"removed disk {rid}")


# ------------------------------------------------------------------------------------ servers
@server_app.command("register")
@handle_errors
def server_register(name: str = typer.Option(..., "--name", help="A name for the server."),
                    system_disk: str = typer.Option(..., "--system-disk", help="A registered disk: id, name or id "
                                                                               "prefix."),
                    data_disk: list[str] = typer.Option(None, "--data-disk", help="A registered disk (repeatable)."),
                    az: str = AZ_OPTION,
                    stopped: bool = typer.Option(False, "--stopped", help="Register it powered off."),
                    as_json: bool = JSON_OPTION):
    """Register a server from registered disks (a system disk and any data disks).

    Example: cbr server register --name web1 --system-disk sys1 --data-disk data1"""
    body = {"name": name, "system_disk": resolve("disks", system_disk),
            "data_disks": [resolve("disks", d) for d in data_disk or []], "availability_zone": az,
            "status": "stopped" if stopped else "running"}
    _show(client().post("/inventory/servers", body)["server"], as_json)


@server_app.command("list")
@handle_errors
def server_list(name: str = NAME_FILTER, as_json: bool = JSON_OPTION):
    """The registered servers."""
    _list("servers", as_json, name)


@server_app.command("show")
@handle_errors
def server_show(server: str = SERVER_ARG, as_json: bool = JSON_OPTION):
    """A server, its disks and the vault protecting it."""
    _show(client().get(f"/inventory/servers/{resolve('servers', server)}")["resource"], as_json)


@server_app.command("remove")
@handle_errors
def server_remove(server: str = typer.Argument(..., help="Server: id, name or id prefix."), yes: bool = YES_OPTION,
                  as_json: bool = JSON_OPTION):
    """Remove a server from the inventory; its disks become available (files and backups stay)."""
    rid = resolve("servers", server)
    confirm(f"Remove server {server} ({rid}) from the inventory?", yes)
    client().delete(f"/inventory/servers/{rid}")
    print_json({"removed": rid}) if as_json else typer.echo(f"removed server {rid}")


def _power(server: str, status: str, as_json: bool) -> None:
    obj = client().put(f"/inventory/servers/{resolve('servers', server)}", {"status": status})["server"]
    _show(obj, as_json)


@server_app.command("start")
@handle_errors
def server_start(server: str = SERVER_ARG, as_json: bool = JSON_OPTION):
    """Mark a server running (a running server's disks are read live or through a snapshot)."""
    _power(server, "running", as_json)


@server_app.command("stop")
@handle_errors
def server_stop(server: str = SERVER_ARG, as_json: bool = JSON_OPTION):
    """Mark a server stopped (its backups are then consistent: nothing writes its disks)."""
    _power(server, "stopped", as_json)


# ------------------------------------------------------------------------------------ file systems
@fs_app.command("register")
@handle_errors
def fs_register(name: str = typer.Option(..., "--name", help="A name for the file system."),
                path: str = typer.Option(..., "--path", help="The directory (on the service's machine)."),
                az: str = AZ_OPTION, host: str = typer.Option(None, "--host", help=HOST_HELP),
                as_json: bool = JSON_OPTION):
    """Register a directory tree as a file system.

    Example: cbr fs register --name share --path /srv/share"""
    body = {"name": name, "path": path if host else os.path.abspath(path), "availability_zone": az, "host": host}
    _show(client().post("/inventory/file-systems", body)["file_system"], as_json)


@fs_app.command("create-from-backup")
@handle_errors
def fs_create_from_backup(backup_id: str = BACKUP_ARG, name: str = typer.Option(..., "--name", help="Its name."),
                          path: str = typer.Option(..., "--path", help="The new directory."),
                          az: str = AZ_OPTION, agent: str = AGENT_OPTION, wait: bool = WAIT_OPTION,
                          as_json: bool = JSON_OPTION):
    """Create a new file system from a file-system backup (this is how file-system backups are restored).

    Example: cbr fs create-from-backup FS_BACKUP --name restored --path /srv/restored --wait"""
    _create_from_backup(backup_id, "create-file-system",
                        {"name": name, "path": _target_path(path, agent), "availability_zone": az,
                         "agent_id": _agent_id(agent)},
                        made=("file_system_id", "file-systems", "File system ID"), wait=wait, as_json=as_json)


@fs_app.command("list")
@handle_errors
def fs_list(name: str = NAME_FILTER, as_json: bool = JSON_OPTION):
    """The registered file systems."""
    _list("file-systems", as_json, name)


@fs_app.command("show")
@handle_errors
def fs_show(fs: str = FS_ARG, as_json: bool = JSON_OPTION):
    """A file system: path, size, status and the vault protecting it."""
    _show(client().get(f"/inventory/file-systems/{resolve('file-systems', fs)}")["resource"], as_json)


@fs_app.command("remove")
@handle_errors
def fs_remove(fs: str = typer.Argument(..., help="File system: id, name or id prefix."), yes: bool = YES_OPTION,
              as_json: bool = JSON_OPTION):
    """Remove a file system from the inventory (the directory stays; its backups stay)."""
    rid = resolve("file-systems", fs)
    confirm(f"Remove file system {fs} ({rid}) from the inventory?", yes)
    client().delete(f"/inventory/file-systems/{rid}")
    print_json({"removed": rid}) if as_json else typer.echo(f"removed file system {rid}")
