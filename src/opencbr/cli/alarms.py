"""``cbr alarm``: where alarms go (a webhook with a signed body, or an email address) and what was sent.
A project's admins manage its targets; the operator's ``--all-projects`` targets receive every
project's alarms. Registered by ``cli.main``."""

from __future__ import annotations

import typer

from opencbr.cli.output import JSON_OPTION, client, handle_errors, print_json, table

alarm_app = typer.Typer(help="Alarm targets (webhook, email) and deliveries.", no_args_is_help=True)
target_app = typer.Typer(help="Where alarms go.", no_args_is_help=True)
alarm_app.add_typer(target_app, name="target")
_ALL = typer.Option(False, "--all-projects", help="The operator's targets, for every project's alarms.")
_COLS = [("id", "ID"), ("kind", "Kind"), ("address", "Address"), ("scope", "Scope"), ("description", "Description")]


def _base(all_projects: bool) -> str:
    return "/admin/alarm-targets" if all_projects else "/alarm-targets"


@target_app.command("list")
@handle_errors
def target_list(all_projects: bool = _ALL, as_json: bool = JSON_OPTION):
    """The alarm targets of your project (or the operator's)."""
    rows = client().get(_base(all_projects))["alarm_targets"]
    print_json(rows) if as_json else table(rows, _COLS, title="alarm targets")


@target_app.command("add")
@handle_errors
def target_add(kind: str = typer.Argument(..., help="webhook or email."),
               address: str = typer.Argument(..., help="The webhook's URL or the email address."),
               description: str = typer.Option("", "--description", help="A note shown in the target list."), all_projects: bool = _ALL,
               as_json: bool = JSON_OPTION):
    """Send alarms (a vault above its threshold, a failed backup, replication, verify or restore test) here.
    A webhook's signing secret is printed once: keep it to verify the X-OpenCBR-Signature header.

    Example: cbr alarm target add webhook https://hooks.example.com/cbr"""
    out = client().post(_base(all_projects), {"alarm_target": {"kind": kind, "address": address,
                                                               "description": description}})["alarm_target"]
    if as_json:
        print_json(out)
        return
    table([out], _COLS, title="alarm target added")
    if out.get("secret"):
        typer.echo(f"signing secret (shown once): {out['secret']}")


@target_app.command("delete")
@handle_errors
def target_delete(target_id: str = typer.Argument(..., help="The target's id."), all_projects: bool = _ALL):
    """Stop sending alarms to a target (its pending deliveries are dropped)."""
    client().request("DELETE", f"{_base(all_projects)}/{target_id}")
    typer.echo(f"alarm target {target_id} deleted")


@alarm_app.command("deliveries")
@handle_errors
def deliveries(limit: int = typer.Option(50, "--limit", help="How many, newest first (at most 1000)."), as_json: bool = JSON_OPTION):
    """The newest alarm deliveries of your project: what was sent where, and whether it arrived."""
    rows = client().get("/alarm-deliveries", limit=limit)["alarm_deliveries"]
    if as_json:
        print_json(rows)
        return
    table(rows, [("id", "ID"), ("event", "Event"), ("event_key", "Key"), ("target_id", "Target"),
                 ("status", "Status"), ("attempts", "Tries"), ("created_at", "Created"), ("last_error", "Last error")],
          title="alarm deliveries")
