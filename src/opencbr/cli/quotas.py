"""``cbr quota``: the project's quotas (guide ch. 12); ``cbr admin quota``: the operator sets a project's
own limits; ``cbr vault migrate-resources``: move resources and their backups to another vault.
Registered by ``cli.main``."""

from __future__ import annotations

import typer

from opencbr.cli import refs
from opencbr.cli.output import JSON_OPTION, client, handle_errors, print_json, table
from opencbr.cli.params import WAIT_OPTION
from opencbr.cli.waiting import raise_if_failed, wait_for

quota_admin_app = typer.Typer(help="Quotas of projects (operator): vaults, backups, capacity, policies.",
                              no_args_is_help=True)
_PROJECT = typer.Argument(..., help="The project's id (see cbr admin project list).")
_COLS = [("type", "Quota"), ("used", "Used"), ("limit", "Limit"), ("unit", "Unit"), ("source", "Set by")]


def _print(answer: dict, as_json: bool) -> None:
    rows = answer["quotas"]["resources"]
    if as_json:
        print_json(answer["quotas"])
        return
    table([{**r, "limit": "no limit" if r["quota"] < 0 else r["quota"],
            "source": "project" if r["overridden"] else "default"} for r in rows], _COLS,
          title=f"quotas of project {answer['quotas']['project_id']}")


@handle_errors
def quota(as_json: bool = JSON_OPTION):
    """Your project's quotas: what it has and what it may have (ask the operator for more)."""
    _print(client().get("/quotas"), as_json)


@quota_admin_app.command("show")
@handle_errors
def quota_show(project: str = _PROJECT, as_json: bool = JSON_OPTION):
    """A project's quotas, and which are its own."""
    _print(client().get(f"/admin/quotas/{project}"), as_json)


@quota_admin_app.command("set")
@handle_errors
def quota_set(project: str = _PROJECT,
              vaults: int = typer.Option(None, "--vaults", help="Vaults (-1: no limit)."),
              backups: int = typer.Option(None, "--backups", help="Backups (-1: no limit)."),
              capacity_gb: int = typer.Option(None, "--capacity-gb", help="Total vault capacity, GB (-1: no limit)."),
              policies: int = typer.Option(None, "--policies", help="Policies (-1: no limit)."),
              as_json: bool = JSON_OPTION):
    """Give a project its own limits; the quotas not named keep theirs.

    Example: cbr admin quota set PROJECT --vaults 20 --capacity-gb 5000"""
    limits = {k: v for k, v in (("vault", vaults), ("backup", backups), ("capacity", capacity_gb),
                                ("policy", policies)) if v is not None}
    _print(client().put(f"/admin/quotas/{project}", {"quotas": limits}), as_json)


@quota_admin_app.command("reset")
@handle_errors
def quota_reset(project: str = _PROJECT,
                only: list[str] = typer.Option(None, "--only", help="Reset only this quota: vault, backup, capacity "
                                                                   "or policy (repeatable)."),
                as_json: bool = JSON_OPTION):
    """Back to the installation's defaults (the quota_* settings)."""
    _print(client().request("DELETE", f"/admin/quotas/{project}", params={"type": only or None}), as_json)


@handle_errors
def vault_migrate_resources(vault: str = typer.Argument(..., help="The source vault: id, name or id prefix."),
                            resources: list[str] = typer.Argument(..., help="Resources to move: id, name or id "
                                                                            "prefix."),
                            to: str = typer.Option(..., "--to", help="The destination vault (same type)."),
                            wait: bool = WAIT_OPTION, as_json: bool = JSON_OPTION):
    """Move resources, with all their backups, to another vault of the same type. The association moves at
    once; a task copies the backups' data into the destination (re-encrypted under its key) and removes it
    from the source only afterwards.

    Example: cbr vault migrate-resources old-vault web1 db1 --to new-vault --wait"""
    c = client()
    src, dest = refs.resolve(c, refs.VAULT, vault), refs.resolve(c, refs.VAULT, to)
    ids = [refs.resolve_resource(c, r)["id"] for r in resources]
    out = c.post(f"/vaults/{src}/migrateresources", {"destination_vault_id": dest, "resource_ids": ids})
    if wait:
        raise_if_failed(wait_for(c, [out["operation_log_id"]], quiet=as_json))
    print_json({**out, "task_id": out["operation_log_id"]}) if as_json else typer.echo(
        f"{len(out['migrated_resources'])} resource(s) moved to vault {dest}; their backups "
        f"{'moved' if wait else 'are moving'} (task {out['operation_log_id']})")
