"""``cbr admin region``: link this installation to other regions (other OpenCBR installations) for
cross-region replication (docs/replication.md). Operator only."""

from __future__ import annotations

import json

import typer

from opencbr.cli.output import JSON_OPTION, client, details, handle_errors, print_json, table

region_app = typer.Typer(help="Linked regions for cross-region replication (operator only).", no_args_is_help=True)


@region_app.command("credential")
@handle_errors
def credential(name: str = typer.Argument(..., help="The source region that will replicate into this one."),
               account_map: str = typer.Option("", "--account-map",
                                               help='Source account -> account here where names differ, as JSON '
                                                    '({"src-account": "dst-account"}).'),
               as_json: bool = JSON_OPTION):
    """Issue a link credential here (the destination); give it to the source's `cbr admin region add`."""
    amap = json.loads(account_map) if account_map else {}
    out = client().post("/regions/credentials", {"name": name, "account_map": amap})["credential"]
    if as_json:
        print_json(out)
    else:
        details(out, [("id", "Credential ID"), ("token", "Credential"), ("fingerprint", "Receiver certificate"),
                      ("replication_listen", "Receiver listens on")])


@region_app.command("add")
@handle_errors
def add(name: str = typer.Argument(..., help="The destination region's name."),
        endpoint: str = typer.Option(..., "--endpoint", help="host:port of its replication receiver."),
        credential: str = typer.Option(..., "--credential", help="The credential `cbr admin region credential` "
                                                                 "printed there."),
        as_json: bool = JSON_OPTION):
    """Link a destination region (here: the source)."""
    out = client().post("/regions", {"name": name, "endpoint": endpoint, "credential": credential})["region"]
    print_json(out) if as_json else typer.echo(f"region {out['name']} linked ({out['endpoint']})")


@region_app.command("list")
@handle_errors
def list_(as_json: bool = JSON_OPTION):
    """Linked destination regions, and the credentials this installation issued."""
    out = client().get("/regions")
    if as_json:
        print_json(out)
        return
    table(out["regions"], [("name", "Region"), ("endpoint", "Endpoint"), ("fingerprint", "Pinned certificate")])
    table(out["credentials"], [("id", "Issued credential"), ("name", "For region"), ("revoked_at", "Revoked")])


@region_app.command("remove")
@handle_errors
def remove(name: str = typer.Argument(..., help="The linked region to forget.")):
    """Forget a linked destination region (here: the source)."""
    client().delete(f"/regions/{name}")
    typer.echo(f"region {name} removed")


@region_app.command("revoke")
@handle_errors
def revoke(credential_id: str = typer.Argument(..., help="A credential this installation issued.")):
    """Revoke a link credential (here: the destination): replications with it are refused."""
    client().delete(f"/regions/credentials/{credential_id}")
    typer.echo(f"credential {credential_id} revoked")
