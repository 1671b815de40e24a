"""``cbr vault lock``: a vault's lock (WORM; docs/vault-lock.md): show, set, extend, lift, and the
operator's grant of the governor permission. Registered by ``cli.main``."""

from __future__ import annotations

import typer

from opencbr.cli import refs
from opencbr.cli.output import JSON_OPTION, YES_OPTION, client, confirm, details, handle_errors, print_json
from opencbr.cli.params import VAULT_ARG

lock_app = typer.Typer(help="Vault locks (WORM): backups no one can delete before their time.",
                       no_args_is_help=True)
_FIELDS = [("vault_id", "Vault"), ("state", "State"), ("mode", "Mode"), ("retention_days", "Keeps each backup (days)"),
           ("until", "Lock ends (UTC)"), ("set_by", "Set by"), ("updated_at", "Changed")]
_RETENTION = typer.Option(None, "--retention-days", help="Every backup is kept at least this many days after it "
                                                         "was made.")
_LOCK_DAYS = typer.Option(None, "--lock-days", help="The lock ends this many days from now.")
_UNTIL = typer.Option(None, "--until", help="The lock ends at this time (ISO 8601, UTC unless it says).")


def _print(answer: dict, as_json: bool) -> None:
    lock = answer["lock"]
    if as_json:
        print_json(lock)
        return
    state = "in force" if lock["active"] else ("ended" if lock["mode"] else "none")
    details({**lock, "state": state}, _FIELDS)


def _spec(mode: str | None, retention_days: int | None, lock_days: int | None, until: str | None) -> dict:
    spec = {"mode": mode, "retention_days": retention_days}
    if lock_days is not None:
        spec["lock_days"] = lock_days
    if until is not None:
        spec["until"] = until
    return spec


@lock_app.command("show")
@handle_errors
def lock_show(vault: str = VAULT_ARG, as_json: bool = JSON_OPTION):
    """The vault's lock: its mode, how long it keeps backups, when it ends."""
    c = client()
    _print(c.get(f"/vaults/{refs.resolve(c, refs.VAULT, vault)}/lock"), as_json)


@lock_app.command("set")
@handle_errors
def lock_set(vault: str = VAULT_ARG,
             mode: str = typer.Option(..., "--mode", help="governance (governors may lift it) or compliance "
                                                           "(nobody can, until it ends)."),
             retention_days: int = typer.Option(..., "--retention-days", help=_RETENTION.help),
             lock_days: int = _LOCK_DAYS, until: str = _UNTIL, yes: bool = YES_OPTION, as_json: bool = JSON_OPTION):
    """Lock the vault (administrators). A compliance lock cannot be undone by anybody before it ends.

    Example: cbr vault lock set my-vault --mode compliance --retention-days 30 --lock-days 365"""
    if mode == "compliance":
        confirm("A compliance lock cannot be lifted or shortened by anybody, the operator included, until it "
                "ends. Lock the vault?", yes)
    c = client()
    _print(c.put(f"/vaults/{refs.resolve(c, refs.VAULT, vault)}/lock", {"lock": _spec(mode, retention_days, lock_days, until)}),
           as_json)


@lock_app.command("extend")
@handle_errors
def lock_extend(vault: str = VAULT_ARG, retention_days: int = _RETENTION, lock_days: int = _LOCK_DAYS,
                until: str = _UNTIL, as_json: bool = JSON_OPTION):
    """Make the lock last longer or keep backups longer; what is not given stays as it is."""
    c = client()
    vault_id = refs.resolve(c, refs.VAULT, vault)
    current = c.get(f"/vaults/{vault_id}/lock")["lock"]
    if not current["mode"]:
        raise typer.BadParameter("the vault has no lock; set one with cbr vault lock set")
    if lock_days is None and until is None:
        until = current["until"]
    spec = _spec(current["mode"], retention_days if retention_days is not None else current["retention_days"],
                 lock_days, until)
    _print(c.put(f"/vaults/{vault_id}/lock", {"lock": spec}), as_json)


@lock_app.command("lift")
@handle_errors
def lock_lift(vault: str = VAULT_ARG, yes: bool = YES_OPTION):
    """Remove the lock: one that has ended, or a governance lock (governors only)."""
    c = client()
    vault_id = refs.resolve(c, refs.VAULT, vault)
    confirm(f"Lift the lock of vault {vault_id}?", yes)
    c.delete(f"/vaults/{vault_id}/lock")
    typer.echo(f"the lock of vault {vault_id} is lifted")


@lock_app.command("governor")
@handle_errors
def lock_governor(user_id: str = typer.Argument(..., help="The administrator's user id."),
                  revoke: bool = typer.Option(False, "--revoke", help="Withdraw the permission instead."),
                  as_json: bool = JSON_OPTION):
    """Grant an administrator the permission to lift or shorten governance locks (the operator)."""
    answer = client().put(f"/admin/vault-lock-governors/{user_id}", {"granted": not revoke})
    if as_json:
        print_json(answer["governor"])
    else:
        typer.echo(f"user {user_id} {'may' if answer['governor']['granted'] else 'may no longer'} lift or shorten "
                   "governance locks")
