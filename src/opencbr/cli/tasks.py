"""``cbr task``: operation logs, with live progress bars."""

from __future__ import annotations

import typer

from opencbr.cli import refs
from opencbr.cli.client import ApiClient, ClientError
from opencbr.cli.output import JSON_OPTION, client, details, handle_errors, print_json, table
from opencbr.cli.params import (
    LIMIT_OPTION,
    RESOURCE_FILTER,
    SINCE_OPTION,
    TASK_ARG,
    TASK_ARGS,
    UNTIL_OPTION,
    VAULT_FILTER,
)
from opencbr.cli.waiting import raise_if_failed, wait_for

task_app = typer.Typer(help="Tasks (operation logs): backups, restores, deletions and other long work.",
                       no_args_is_help=True)

_COLS = [("id", "ID"), ("operation_type", "Type"), ("status", "Status"), ("extra_info.common.progress", "%"),
         ("vault_name", "Vault"), ("extra_info.resource.name", "Resource"), ("created_at", "Created"),
         ("error_info.message", "Error")]


def resolve_task(c: ApiClient, ref: str) -> str:
    """A task id from its id or a unique id prefix; a backup (id, name or prefix) stands for the task
    that made it, so that ``cbr task watch BACKUP`` follows a backup."""
    try:
        tid = refs.resolve(c, refs.TASK, ref)
        c.get(f"/operation-logs/{tid}")
        return tid
    except ClientError as not_a_task:
        try:
            bid = refs.resolve(c, refs.BACKUP, ref)
            task_id = c.get(f"/backups/{bid}")["backup"].get("task_id")
        except ClientError:
            raise not_a_task from None
        if not task_id:
            raise ClientError(f"backup {bid} has no task to follow") from None
        return task_id


@task_app.command("list")
@handle_errors
def task_list(status: str = typer.Option(None, "--status", help="Only tasks in this state: queued, running, "
                                                                 "success, failed..."),
              type_: str = typer.Option(None, "--type", help="Only tasks of this kind, e.g. backup, restore, "
                                                             "vault_delete."),
              vault: str = VAULT_FILTER, resource: str = RESOURCE_FILTER, since: str = SINCE_OPTION,
              until: str = UNTIL_OPTION, limit: int = LIMIT_OPTION, as_json: bool = JSON_OPTION):
    """Tasks, newest first: every backup, restore, deletion and retention sweep, with progress and errors."""
    c = client()
    data = c.get("/operation-logs", status=status, operation_type=type_,
                 vault_id=refs.resolve(c, refs.VAULT, vault) if vault else None,
                 resource_id=refs.resolve_resource(c, resource)["id"] if resource else None, start_time=since, end_time=until, limit=limit)
    if as_json:
        print_json(data["operation_logs"])
    else:
        table(data["operation_logs"], _COLS, title=f"{data['count']} tasks")


@task_app.command("show")
@handle_errors
def task_show(task_id: str = TASK_ARG, as_json: bool = JSON_OPTION):
    """A task: what it works on, its progress, times and error."""
    c = client()
    log = c.get(f"/operation-logs/{resolve_task(c, task_id)}")["operation_log"]
    if as_json:
        print_json(log)
    else:
        details(log, [("id", "ID"), ("operation_type", "Type"), ("status", "Status"),
                      ("extra_info.common.progress", "Progress %"), ("vault_id", "Vault ID"),
                      ("vault_name", "Vault"), ("extra_info.resource.id", "Resource ID"),
                      ("extra_info.resource.name", "Resource"), ("created_at", "Created"),
                      ("started_at", "Started"), ("ended_at", "Ended"), ("error_info.code", "Error code"),
                      ("error_info.message", "Error")])


@task_app.command("watch")
@handle_errors
def task_watch(task_id: list[str] = TASK_ARGS, as_json: bool = JSON_OPTION):
    """Follow tasks with progress bars until they finish; exit 1 if one did not succeed.

    Examples:
      cbr task watch 3f2a1b9c
      cbr task watch manualbk_ab12     # the task making that backup"""
    c = client()
    logs = wait_for(c, [resolve_task(c, t) for t in task_id], quiet=as_json)
    if as_json:
        print_json(logs)
    raise_if_failed(logs)


@task_app.command("cancel")
@handle_errors
def task_cancel(task_id: str = TASK_ARG, as_json: bool = JSON_OPTION):
    """Ask a running task to stop; it ends as failed with 'cancelled', leaving nothing half-made."""
    c = client()
    task_id = resolve_task(c, task_id)
    log = c.post(f"/operation-logs/{task_id}/cancel")["operation_log"]
    print_json(log) if as_json else typer.echo(f"cancel requested for task {task_id}")
