"""``cbr backup replicate`` and ``cbr vault replicate``: copy backups into a replication vault of a linked
region (docs/replication.md). Registered on the backup and vault commands by ``cli.main``."""

from __future__ import annotations

import typer

from opencbr.cli import refs
from opencbr.cli.output import JSON_OPTION, client, handle_errors, print_json

REGION = typer.Option(..., "--region", help="The destination region (see `cbr admin region list`).")
DEST_PROJECT = typer.Option(..., "--to-project", help="Your project's id in the destination region.")
DEST_VAULT = typer.Option(..., "--to-vault", help="The replication vault's id in the destination region.")


def _target(region: str, project: str, vault: str) -> dict:
    return {"destination_region": region, "destination_project_id": project, "destination_vault_id": vault}


@handle_errors
def backup_replicate(backup: str = typer.Argument(..., help="Backup: id, name or id prefix."),
                     region: str = REGION, to_project: str = DEST_PROJECT, to_vault: str = DEST_VAULT,
                     name: str = typer.Option("", "--name", help="The replica's name (default: the backup's)."),
                     as_json: bool = JSON_OPTION):
    """Replicate one backup to another region (runs as a task; see `cbr backup show --json`)."""
    c = client()
    body = _target(region, to_project, to_vault)
    if name:
        body["name"] = name
    out = c.post(f"/backups/{refs.resolve(c, refs.BACKUP, backup)}/replicate", {"replicate": body})["replication"]
    print_json(out) if as_json else typer.echo(
        f"replicating backup {out['backup_id']} to {out['destination_region']} "
        f"(record {out['replication_record_id']})")


@handle_errors
def vault_replicate(vault: str = typer.Argument(..., help="Vault: id, name or id prefix."),
                    region: str = REGION, to_project: str = DEST_PROJECT, to_vault: str = DEST_VAULT,
                    as_json: bool = JSON_OPTION):
    """Replicate every Available backup of a vault that has no replica in that region yet."""
    c = client()
    body = {"vault_id": refs.resolve(c, refs.VAULT, vault), **_target(region, to_project, to_vault)}
    out = c.post("/checkpoints/replicate", {"replicate": body})["replication"]
    print_json(out) if as_json else typer.echo(
        f"replicating {len(out['backups'])} backup(s) to {out['destination_region']}")
