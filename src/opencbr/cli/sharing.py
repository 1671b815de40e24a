"""Sharing backups with other projects (docs/sharing.md): ``cbr backup share``, ``unshare`` and
``members`` for the sharer; ``cbr backup shared``, ``accept`` and ``reject`` for the recipient. Registered
on the backup commands by ``cli.main``."""

from __future__ import annotations

import typer

from opencbr.cli import refs
from opencbr.cli.client import ApiClient
from opencbr.cli.output import JSON_OPTION, client, handle_errors, human, print_json, table
from opencbr.cli.params import BACKUP_ARG

SHARED = refs.Kind("shared backup", "backups shared with you", "/backups", "backups", "cbr backup shared",
                   named=True)
_SHARED_ARG = typer.Argument(..., metavar="BACKUP", help="A backup shared with you: its id, name or id prefix "
                                                         "(see `cbr backup shared`).")
_MEMBER_COLS = [("dest_project_id", "Project"), ("status", "Status"), ("vault_id", "Vault"),
                ("created_at", "Shared"), ("updated_at", "Answered")]


def _shared_with_me(c: ApiClient, status: str | None = None) -> list[dict]:
    params = {"own_type": "shared", "limit": 1000}
    if status:
        params["member_status"] = status
    return c.get("/backups", **params)["backups"]


def _resolve_shared(c: ApiClient, ref: str) -> str:
    if refs.looks_like_id(ref):
        return ref
    items = [{**b, "_kind": SHARED} for b in _shared_with_me(c)]
    return refs._pick(ref, items, SHARED.plural, SHARED.list_command)["id"]


def _print_members(members: list[dict], as_json: bool) -> None:
    if as_json:
        print_json({"members": members})
    elif not members:
        typer.echo("not shared with any project")
    else:
        table(members, _MEMBER_COLS)


@handle_errors
def backup_share(backup: str = BACKUP_ARG,
                 projects: list[str] = typer.Option(..., "--project", "-p",
                                                    help="A project to share with (its id); repeat for several."),
                 as_json: bool = JSON_OPTION):
    """Share a server or disk backup with other projects of this region (at most 10; encrypted backups
    cannot be shared). Each project accepts it into one of its vaults, or rejects it.

    Example: cbr backup share manualbk_1a2b --project 5f0c...e1 --project 77ab...02"""
    c = client()
    out = c.post(f"/backups/{refs.resolve(c, refs.BACKUP, backup)}/members", {"members": projects})["members"]
    _print_members(out, as_json)


@handle_errors
def backup_members(backup: str = BACKUP_ARG, as_json: bool = JSON_OPTION):
    """The projects a backup of yours is shared with, and their answers."""
    c = client()
    _print_members(c.get(f"/backups/{refs.resolve(c, refs.BACKUP, backup)}/members")["members"], as_json)


@handle_errors
def backup_unshare(backup: str = BACKUP_ARG,
                   projects: list[str] = typer.Option(..., "--project", "-p", help="The project to stop sharing "
                                                      "with; repeat for several."),
                   as_json: bool = JSON_OPTION):
    """Cancel sharing with projects: the backup leaves their accounts (disks they made from it stay)."""
    c = client()
    bid = refs.resolve(c, refs.BACKUP, backup)
    for project in projects:
        c.delete(f"/backups/{bid}/members/{project}")
    _print_members(c.get(f"/backups/{bid}/members")["members"], as_json)


@handle_errors
def backup_shared(status: str = typer.Option("", "--status", help="Only those pending, accepted or rejected."),
                  as_json: bool = JSON_OPTION):
    """Backups shared with you (by other projects), with your answer: accept one into a vault to create
    disks from it (`cbr disk create-from-backup`)."""
    rows = _shared_with_me(client(), status or None)
    if as_json:
        print_json({"backups": rows})
    elif not rows:
        typer.echo("no backups are shared with you")
    else:
        table([{**b, "size": human(b.get("logical_bytes")), "owner": b.get("project_id")} for b in rows],
              [("id", "ID"), ("name", "Name"), ("member_status", "Your answer"), ("vault_id", "In vault"),
               ("resource_name", "Resource"), ("resource_type", "Type"), ("size", "Size"),
               ("owner", "Shared by project"), ("created_at", "Created")])


def _answer(backup: str, status: str, vault: str | None, as_json: bool) -> None:
    c = client()
    bid = _resolve_shared(c, backup)
    body = {"status": status, **({"vault_id": refs.resolve(c, refs.VAULT, vault)} if vault else {})}
    m = c.put(f"/backups/{bid}/members/{c.cfg.project_id}", body)["member"]
    print_json({"member": m}) if as_json else typer.echo(
        f"backup {bid} {status}" + (f" into vault {m['vault_id']}" if m.get("vault_id") else ""))


@handle_errors
def backup_accept(backup: str = _SHARED_ARG,
                  vault: str = typer.Option(..., "--vault", help="Your vault to hold it (of the backup's kind, with "
                                                                 "more free space than its size)."),
                  as_json: bool = JSON_OPTION):
    """Accept a backup shared with you into one of your vaults (it counts against its capacity)."""
    _answer(backup, "accepted", vault, as_json)


@handle_errors
def backup_reject(backup: str = _SHARED_ARG, as_json: bool = JSON_OPTION):
    """Reject a backup shared with you (an accepted one leaves its vault)."""
    _answer(backup, "rejected", None, as_json)
