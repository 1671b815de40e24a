"""Arguments and options that many commands share, with their help text written once."""

from __future__ import annotations

import typer

_REF = "id, name or the first characters of its id (as tables show them)"

VAULT_ARG = typer.Argument(..., help=f"The vault: {_REF}.")
BACKUP_ARG = typer.Argument(..., metavar="BACKUP", help=f"The backup: {_REF}; a disk backup of a server backup too.")
POLICY_ARG = typer.Argument(..., help=f"The policy: {_REF}.")
DISK_ARG = typer.Argument(..., help=f"The disk: {_REF}.")
SERVER_ARG = typer.Argument(..., help=f"The server: {_REF}.")
FS_ARG = typer.Argument(..., metavar="FILE_SYSTEM", help=f"The file system: {_REF}.")
TASK_ARGS = typer.Argument(..., metavar="TASK...", help="Tasks (id or id prefix), or backups (their tasks are "
                                                        "followed).")
TASK_ARG = typer.Argument(..., metavar="TASK", help="The task: its id or the first characters of it.")

WAIT_OPTION = typer.Option(False, "--wait", help="Follow the task with a progress bar until it ends; Ctrl-C stops "
                                                 "following, not the task.")
NAME_FILTER = typer.Option(None, "--name", help="Only those whose name contains this text.")
LIMIT_OPTION = typer.Option(100, "--limit", help="At most this many (newest first).")
SINCE_OPTION = typer.Option(None, "--since", help="Only from this time on, e.g. 2024-01-31T00:00:00Z (UTC).")
UNTIL_OPTION = typer.Option(None, "--until", help="Only up to this time, e.g. 2024-02-01T00:00:00Z (UTC).")
AZ_OPTION = typer.Option(None, "--az", help="Availability zone (see `cbr vault create --help`; default: the first).")
DESCRIPTION_OPTION = typer.Option(None, "--description", help="Free text shown with it.")
VAULT_FILTER = typer.Option(None, "--vault", help=f"Only those of this vault: {_REF}.")
RESOURCE_FILTER = typer.Option(None, "--resource", help=f"Only those of this server, disk or file system: {_REF}.")
