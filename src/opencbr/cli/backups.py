"""``cbr backup``: create, list, show, delete, restore, verify and export backups; ``cbr disk
create-from-backup`` lives with the disks but uses the helpers here."""

from __future__ import annotations

import contextlib
import os

import typer

from opencbr.cli import output, refs
from opencbr.cli.client import ApiClient, ClientError
from opencbr.cli.messages import explain_backup_error, explain_restore_error
from opencbr.cli.output import (
    JSON_OPTION,
    YES_OPTION,
    client,
    confirm,
    details,
    handle_errors,
    human,
    print_json,
    table,
)
from opencbr.cli.params import (
    BACKUP_ARG,
    DESCRIPTION_OPTION,
    LIMIT_OPTION,
    NAME_FILTER,
    RESOURCE_FILTER,
    SINCE_OPTION,
    UNTIL_OPTION,
    VAULT_ARG,
    VAULT_FILTER,
    WAIT_OPTION,
)
from opencbr.cli.waiting import raise_if_failed, wait_for
from opencbr.domain.backup import damaged_chunk_where, find_export_damage
from opencbr.domain.names import shown_name

#: Zero runs at least this long become holes in an exported image (the engine's block size).
SPARSE_GRAIN = 64 * 1024

backup_app = typer.Typer(help="Backups: create, list, restore, verify, export.", no_args_is_help=True)

_COLS = [("id", "ID"), ("name", "Name"), ("status", "Status"), ("resource_name", "Resource"),
         ("resource_type", "Type"), ("size", "Size"), ("added", "Added"), ("created_at", "Created")]


def resolve_backup(c: ApiClient, ref: str) -> str:
    """A backup id from an id, a unique name or a unique id prefix (disk backups of server backups too)."""
    return refs.resolve(c, refs.BACKUP, ref)


#: How a backup's point in time was taken, in the words ``vault show`` uses for consistency.
CONSISTENCY = {"stopped": "consistent (taken while stopped)",
               "reflink-snapshot": "crash-consistent (all disks cloned at one moment)",
               "live": "read live: consistent per block only",
               "live-tree": "read live: consistent per file only"}


def _row(b: dict) -> dict:
    method = (b.get("consistency") or {}).get("method")
    return {**b, "size": human(b.get("logical_bytes")), "added": human(b.get("added_bytes")),
            "consistency_text": CONSISTENCY.get(method, method or ""), "read_text": _read_text(b)}


def _read_text(b: dict) -> str:
    """What a file-system backup could not read as it was, and where the files are named."""
    n = b.get("warning_count") or 0
    if not n and not b.get("partial"):
        return ""
    where = f"cbr task show {b['task_id']}" if b.get("task_id") else "its task"
    text = f"{n} file(s) warned about ({where} names them, for 30 days)"
    return ("PARTIAL: what could not be read is not in it; " if b.get("partial") else "") + text


def _with_disks(backups: list[dict]) -> list[dict]:
    """Each backup's row, followed by the rows of its disk backups (a server backup's), as a tree."""
    rows = []
    for b in backups:
        rows.append(_row(b))
        kids = b.get("children") or []
        for n, c in enumerate(kids):
            branch = "└─" if n == len(kids) - 1 else "├─"
            rows.append({**_row(c), "name": f"{branch} {c.get('disk_role') or 'disk'}", "resource_type": "disk"})
    return rows


def _show(b: dict, as_json: bool) -> None:
    if as_json:
        print_json(b)
        return
    details(_row(b), [("id", "ID"), ("name", "Name"), ("description", "Description"), ("status", "Status"),
                      ("resource_name", "Resource"), ("resource_id", "Resource ID"), ("resource_type", "Type"),
                      ("vault_id", "Vault"), ("size", "Logical size"), ("added", "Added to vault"),
                      ("incremental", "Incremental"), ("extend_info.auto_trigger", "Automatic"),
                      ("extend_info.encrypted", "Encrypted"), ("consistency_text", "Consistency"),
                      ("read_text", "Not read as is"), ("created_at", "Created"), ("protected_at", "Completed"), ("expired_at", "Expires"),
                      ("error_info.message", "Error")])
    if b.get("children"):
        table([_row(c) for c in b["children"]], [("id", "Disk backup"), ("resource_name", "Disk"),
                                                  ("disk_role", "Role"), ("size", "Size"), ("added", "Added")])


@backup_app.command("create")
@handle_errors
def backup_create(vault: str = VAULT_ARG,
                  resource: list[str] = typer.Option(None, "--resource", help="Only this resource of the vault: id, "
                                                     "name or id prefix (repeatable). Default: all."),
                  name: str = typer.Option(None, "--name", help="Default: manualbk_ and four characters."),
                  description: str = DESCRIPTION_OPTION,
                  full: bool = typer.Option(False, "--full", help="Re-read and re-store every block."),
                  wait: bool = WAIT_OPTION, as_json: bool = JSON_OPTION):
    """Back up the resources of a vault now. Without --wait, prints each backup's task and returns.

    Examples:
      cbr backup create servers --wait
      cbr backup create servers --resource web1 --name before-upgrade"""
    c = client()
    vid = refs.resolve(c, refs.VAULT, vault)
    resource = [refs.resolve_resource(c, r)["id"] for r in resource or []]
    params = {k: v for k, v in (("resources", resource or None), ("name", name), ("description", description),
                                ("incremental", False if full else None)) if v is not None}
    try:
        cp = c.post("/checkpoints", {"checkpoint": {"vault_id": vid, "parameters": params}})["checkpoint"]
    except ClientError as e:
        raise explain_backup_error(c, e) from None
    ids = [r["backup_id"] for r in cp["vault"]["resources"]]
    if wait:
        tasks = [c.get(f"/backups/{i}")["backup"]["task_id"] for i in ids]
        logs = wait_for(c, tasks, quiet=as_json)
        backups = [c.get(f"/backups/{i}")["backup"] for i in ids]
        if as_json:
            print_json({"checkpoint_id": cp["id"], "backups": backups})
        else:
            table([_row(b) for b in backups], _COLS)
        raise_if_failed(logs)
        return
    backups = [c.get(f"/backups/{i}")["backup"] for i in ids]
    if as_json:
        print_json({"checkpoint_id": cp["id"], "backups": backups})
        return
    for b in backups:
        typer.echo(f"backup {b['id']} of {b['resource_name']}: task {b['task_id']}")
    typer.echo(f"follow with: cbr task watch {' '.join(b['task_id'] for b in backups)}")


@backup_app.command("list")
@handle_errors
def backup_list(vault: str = VAULT_FILTER, resource: str = RESOURCE_FILTER,
                status: str = typer.Option(None, "--status", help="Only backups in this state, e.g. available."),
                name: str = NAME_FILTER, since: str = SINCE_OPTION, until: str = UNTIL_OPTION,
                limit: int = LIMIT_OPTION,
                disks: bool = typer.Option(False, "--disks", help="Show the disk backups inside each server "
                                                                  "backup, under it."),
                as_json: bool = JSON_OPTION):
    """Backups, newest first: logical size and what each added to its vault.

    Example: cbr backup list --vault servers --disks"""
    c = client()
    data = c.get("/backups", vault_id=refs.resolve(c, refs.VAULT, vault) if vault else None,
                 resource_id=refs.resolve_resource(c, resource)["id"] if resource else None,
                        status=status, name=name, start_time=since, end_time=until, limit=limit)
    if as_json:
        print_json(data["backups"])
    else:
        rows = _with_disks(data["backups"]) if disks else [_row(b) for b in data["backups"]]
        table(rows, _COLS, title=f"{data['count']} backups")


@backup_app.command("show")
@handle_errors
def backup_show(backup: str = BACKUP_ARG, as_json: bool = JSON_OPTION):
    """A backup: status, sizes, consistency, times, and a server backup's disk backups."""
    c = client()
    _show(c.get(f"/backups/{resolve_backup(c, backup)}")["backup"], as_json)


@backup_app.command("delete")
@handle_errors
def backup_delete(backup_id: str = typer.Argument(..., metavar="BACKUP", help="Backup: id, name or id prefix."),
                  wait: bool = typer.Option(False, "--wait", help="Wait until it is deleted."),
                  yes: bool = YES_OPTION, as_json: bool = JSON_OPTION):
    """Delete a backup (a server backup with its disk backups). Other backups stay restorable."""
    c = client()
    b = c.get(f"/backups/{resolve_backup(c, backup_id)}")["backup"]
    backup_id = b["id"]
    confirm(f"Delete backup {b['name']} ({backup_id}) of {b['resource_name']}?", yes)
    task_id = c.delete(f"/backups/{backup_id}")["operation_log_id"]
    if wait:
        raise_if_failed(wait_for(c, [task_id], quiet=as_json))
    print_json({"backup_id": backup_id, "task_id": task_id}) if as_json else \
        typer.echo(f"backup {backup_id} {'deleted' if wait else 'is being deleted'} (task {task_id})")


@backup_app.command("restore")
@handle_errors
def backup_restore(backup_id: str = BACKUP_ARG,
                   disk: str = typer.Option(None, "--disk", help="Target disk of a disk backup (default: its own)."),
                   server: str = typer.Option(None, "--server", help="Target server of a server backup (default: "
                                                                     "its own)."),
                   map_: list[str] = typer.Option(None, "--map", help="DISK_BACKUP=TARGET_DISK: which disk of the "
                                                                      "server receives which disk backup "
                                                                      "(repeatable)."),
                   power_on: bool = typer.Option(True, "--power-on/--no-power-on",
                                                 help="Start the server afterwards (default)."),
                   wait: bool = WAIT_OPTION, as_json: bool = JSON_OPTION):
    """Restore a server or disk backup onto its server or disk, overwriting their data. File-system backups
    are restored with cbr fs create-from-backup.

    Examples:
      cbr backup restore BACKUP --server web1 --wait
      cbr backup restore DISK_BACKUP --wait"""
    c = client()
    body: dict = {"power_on": power_on}
    if disk:
        body["volume_id"] = refs.resolve(c, refs.DISK, disk)
    if server:
        body["server_id"] = refs.resolve(c, refs.SERVER, server)
    if map_:
        pairs = []
        for m in map_:
            if "=" not in m:
                raise ClientError(f"--map needs DISK_BACKUP_ID=TARGET_DISK_ID, got {m!r}")
            src, dst = m.split("=", 1)
            pairs.append({"backup_id": resolve_backup(c, src), "volume_id": refs.resolve(c, refs.DISK, dst)})
        body["mappings"] = pairs
    backup = c.get(f"/backups/{resolve_backup(c, backup_id)}")["backup"]
    backup_id = backup["id"]
    try:
        task_id = c.post(f"/backups/{backup_id}/restore", {"restore": body})["operation_log_id"]
    except ClientError as e:
        raise explain_restore_error(c, e, backup, body.get("volume_id")) from None
    if wait:
        raise_if_failed(wait_for(c, [task_id], quiet=as_json))
    print_json({"backup_id": backup_id, "task_id": task_id}) if as_json else \
        typer.echo(f"restore of {backup_id} {'finished' if wait else 'started'} (task {task_id})")


@backup_app.command("verify")
@handle_errors
def backup_verify(backup_id: str = BACKUP_ARG, as_json: bool = JSON_OPTION):
    """Re-read every chunk of a backup and report damage (exit 1 if any)."""
    c = client()
    task_id = c.post(f"/backups/{resolve_backup(c, backup_id)}/verify")["operation_log_id"]
    log = wait_for(c, [task_id], quiet=as_json)[0]
    report = log["extra_info"].get("verify", {})
    if as_json:
        print_json({"task_id": task_id, "status": log["status"], **report})
    else:
        for d in report.get("disks", []):
            _print_verified_disk(d)
    raise_if_failed([log])


def _print_verified_disk(d: dict, shown: int = 10) -> None:
    """One disk (or tree) of a verify report: counts of everything, the first few damaged chunks."""
    damaged, missing = d.get("damaged_count", len(d["damaged"])), d.get("missing_count", len(d["missing"]))
    state = "[green]ok[/green]" if d["ok"] else f"[red]{damaged} damaged, {missing} missing[/red]"
    output.err_console.print(f"{d['disk']}: {d['chunks_checked']} chunks, {human(d['bytes_checked'])}: {state}",
                      highlight=False)
    bad = [("damaged", c) for c in d["damaged"]] + [("missing", c) for c in d["missing"]]
    for kind, c in bad[:shown]:
        output.err_console.print(f"  {kind} chunk {c['digest']} {damaged_chunk_where(c)}: {c['reason']}",
                          highlight=False, markup=False)
    if damaged + missing > shown:
        output.err_console.print(f"  ... and {damaged + missing - shown} more (--json lists up to 100 of each kind)",
                          highlight=False)


@backup_app.command("export")
@handle_errors
def backup_export(backup_id: str = BACKUP_ARG, output: str = typer.Option(..., "--output", "-o", help="Local image file."),
                  force: bool = typer.Option(False, "--force", help="Overwrite the output file if it exists."),
                  as_json: bool = JSON_OPTION):
    """Download a disk backup as a raw image file (sparse where the disk was empty).

    Example: cbr backup export DISK_BACKUP -o disk.img"""
    if os.path.exists(output) and not force:
        raise ClientError(f"{output} exists; add --force to overwrite it")
    c = client()
    backup_id = resolve_backup(c, backup_id)
    tmp = output + ".part"
    try:
        written = _download_image(c, backup_id, tmp, as_json)
        os.replace(tmp, output)
    except BaseException:  # a damaged backup, a cut connection, Ctrl-C: no partial image stays behind
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    print_json({"backup_id": backup_id, "output": output, "bytes": written}) if as_json else \
        typer.echo(f"wrote {human(written)} to {output}")


def _download_image(c, backup_id: str, tmp: str, as_json: bool) -> int:
    """Stream the image into ``tmp``; the byte count. A stream the server ended early because of a
    damaged chunk (see ``find_export_damage``) is reported as damage, not as a network failure."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    written, total, token, tail = 0, 0, "", bytearray()
    try:
        with c.stream(f"/backups/{backup_id}/export") as resp:
            total, token = int(resp.headers.get("Content-Length", 0)), resp.headers.get("X-Export-Token", "")
            with open(tmp, "wb") as f, Progress(TextColumn("export"), BarColumn(), DownloadColumn(),
                                                TransferSpeedColumn(), console=output.err_console, disable=as_json) as bar:
                t = bar.add_task("export", total=total)
                pending = bytearray()  # written in 1 MiB pieces; read as it arrives, so a cut keeps the tail
                for chunk in resp.iter_bytes():
                    pending += chunk
                    tail += chunk
                    del tail[:-4096]
                    written += len(chunk)
                    if len(pending) >= 1 << 20:
                        _write_sparse(f, pending)
                        pending.clear()
                        bar.update(t, completed=written)
                _write_sparse(f, pending)
                f.truncate(written)
                f.flush()
                os.fsync(f.fileno())
    except ClientError:
        damage = find_export_damage(bytes(tail), token)
        if damage is None:
            raise
        where = f"chunk {damage['digest']} at offset {damage['offset']}: {damage['reason']}" if damage else \
            f"at about offset {written}"
        raise ClientError(f"backup damaged: {where}; the export stopped there and nothing was kept "
                          "(cbr backup verify reports all damage)", code="BackupService.6010") from None
    except OSError as e:
        raise ClientError(f"cannot write {tmp}: {e.strerror or e}") from None
    if written != total:
        raise ClientError(f"the export stopped after {written} of {total} bytes")
    return written


def _write_sparse(f, chunk: bytes | bytearray) -> None:
    view = memoryview(chunk)
    for i in range(0, len(chunk), SPARSE_GRAIN):
        piece = view[i:i + SPARSE_GRAIN]
        if piece.tobytes().count(0) == len(piece):
            f.seek(len(piece), os.SEEK_CUR)  # leave a hole where the disk was empty
        else:
            f.write(piece)


@backup_app.command("ls")
@handle_errors
def backup_ls(backup_id: str = BACKUP_ARG, path: str = typer.Argument("/", help="A directory inside the backup."),
              as_json: bool = JSON_OPTION):
    """List files inside a backup without restoring it (file-system backups, and disk backups holding
    ext or FAT file systems). Of a server backup, lists its disk backups.

    Examples:
      cbr backup ls BACKUP
      cbr backup ls DISK_BACKUP /etc"""
    c = client()
    backup = c.get(f"/backups/{resolve_backup(c, backup_id)}")["backup"]
    if backup.get("children"):
        _list_disk_backups(backup, path, as_json)
        return
    entries = c.get(f"/backups/{backup['id']}/files", path=shown_name(path))["entries"]
    if as_json:
        print_json(entries)
        return
    import stat as st
    from datetime import datetime

    rows = [{**e, "perm": st.filemode(e["mode"]), "size_h": human(e["size"]) if e["type"] == "file" else "",
             # (a disk's partitions are listed as directories with no time of their own: mtime 0)
             "when": datetime.fromtimestamp(e["mtime"]).strftime("%Y-%m-%d %H:%M") if e.get("mtime") else "--",
             "shown": e["name"] + ("/" if e["type"] == "dir" else "") +
             (f" -> {e['link_target']}" if e.get("link_target") else "")} for e in entries]
    table(rows, [("perm", "Mode"), ("size_h", "Size"), ("when", "Modified"), ("shown", "Name")], title=path)


def _list_disk_backups(backup: dict, path: str, as_json: bool) -> None:
    """A server backup holds one backup per disk: they are what ``ls`` shows of it."""
    if as_json:
        print_json(backup["children"])
        return
    table([_row(c) for c in backup["children"]],
          [("id", "Disk backup"), ("resource_name", "Disk"), ("disk_role", "Role"), ("size", "Size"),
           ("added", "Added")], title=f"server backup {backup['name']}: one backup per disk")
    output.err_console.print(f"browse one with: cbr backup ls DISK_BACKUP {path if path != '/' else '[PATH]'}",
                      highlight=False)


@backup_app.command("restore-files")
@handle_errors
def backup_restore_files(backup_id: str = BACKUP_ARG, paths: list[str] = typer.Argument(..., help="Paths inside the backup."),
                         to: str = typer.Option(..., "--to", help="Directory to restore into: on the --agent's "
                                                                  "host; without --agent, on the host of the agent "
                                                                  "that read the backup, or on the service's machine."),
                         agent: str = typer.Option(None, "--agent", help="Restore onto this agent's host (id or "
                                                                         "host name); --to is a path there."),
                         wait: bool = WAIT_OPTION, as_json: bool = JSON_OPTION):
    """Restore single files or directories of a backup into a directory, leaving the resource alone.

    Example: cbr backup restore-files DISK_BACKUP /etc/hosts --to /tmp/out --wait"""
    from opencbr.cli import agents

    c = client()
    dest = to if agent else os.path.abspath(to)
    # a name that is not UTF-8, given as its bytes, is sent as the API shows it (domain/names.py)
    body = {"paths": [shown_name(x) for x in paths], "destination_path": dest,
            "agent_id": agents.resolve(c, agent) if agent else None}
    task_id = c.post(f"/backups/{resolve_backup(c, backup_id)}/restore-files", body)["operation_log_id"]
    if wait:
        raise_if_failed(wait_for(c, [task_id], quiet=as_json))
    print_json({"backup_id": backup_id, "task_id": task_id, "destination_path": dest}) if as_json \
        else typer.echo(f"restore of {len(paths)} path(s) {'finished' if wait else 'started'} (task {task_id})")
