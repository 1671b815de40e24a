"""``cbr verify-policy`` and ``cbr restore-test``: a vault's scheduled verification and restore tests, their
last outcome, and running one now (docs/verification.md). Registered by ``cli.main``."""

from __future__ import annotations

import shlex

import typer

from opencbr.cli import refs
from opencbr.cli.output import JSON_OPTION, client, details, handle_errors, print_json
from opencbr.cli.params import WAIT_OPTION
from opencbr.cli.waiting import raise_if_failed, wait_for

verify_policy_app = typer.Typer(help="A vault's verify policy: re-read a share of its backups every N days.",
                                no_args_is_help=True)
restore_test_app = typer.Typer(help="A vault's restore tests: restore a backup to a scratch place every N days "
                                    "and check it.", no_args_is_help=True)
_VAULT = typer.Argument(..., help="The vault: id, name or id prefix.")
_EVERY = typer.Option(None, "--every", help="Days between two runs (1-366; default 7).")
_START = typer.Option(None, "--start-at", help="When the first run is due (ISO 8601, UTC; default: now).")
_ENABLED = typer.Option(None, "--enable/--disable", help="Run on schedule, or keep the policy but stop.")
_FIELDS = [("kind", "Policy"), ("enabled", "Enabled"), ("interval_days", "Every (days)"), ("next_run_at", "Next run")]
_KIND_FIELDS = {"verify": [("share_percent", "Share (%)")],
                "restore_test": [("backup_rule", "Backup"), ("resource_id", "Resource"), ("command", "Check command")]}
_LAST_FIELDS = [("last_status", "Last result"), ("last_finished_at", "Last run"), ("last_message", "Details"),
                ("last_recovery", "Recovery time"), ("last_task_id", "Last task")]


def _show(check: dict, as_json: bool) -> None:
    if as_json:
        print_json(check)
        return
    last = check["last"]
    recovery = last["recovery_seconds"]
    details({**check, "command": shlex.join(check["check_command"]) or None, "last_status": last["status"],
             "last_finished_at": last["finished_at"], "last_message": last["message"] or None,
             "last_recovery": None if recovery is None else f"{recovery:.1f} s", "last_task_id": last["task_id"]},
            _FIELDS + _KIND_FIELDS[check["kind"]] + _LAST_FIELDS, title=f"vault {check['vault_id']}")


def _put(vault: str, kind: str, spec: dict, as_json: bool) -> None:
    c = client()
    _show(c.put(f"/vaults/{refs.resolve(c, refs.VAULT, vault)}/checks/{kind}", {"check": spec})["check"], as_json)


def _run(vault: str, kind: str, wait: bool, as_json: bool) -> None:
    c = client()
    out = c.post(f"/vaults/{refs.resolve(c, refs.VAULT, vault)}/checks/{kind}/run", {})
    if out["task_id"] and wait:
        raise_if_failed(wait_for(c, [out["task_id"]], quiet=as_json))
    print_json(out) if as_json else typer.echo(f"task {out['task_id']} {'done' if wait else 'queued'}"
                                               if out["task_id"] else out["reason"])


def _common(every: int | None, start_at: str | None, enabled: bool | None) -> dict:
    return {k: v for k, v in (("interval_days", every), ("start_at", start_at), ("enabled", enabled)) if v is not None}


# ------------------------------------------------------------------------------------ verify
@verify_policy_app.command("set")
@handle_errors
def verify_set(vault: str = _VAULT, every: int = _EVERY, start_at: str = _START, enabled: bool = _ENABLED,
               share: int = typer.Option(None, "--share", help="Percent of the backups each run re-reads, those "
                                                               "verified longest ago first (default 100: all)."),
               as_json: bool = JSON_OPTION):
    """Create or change the vault's verify policy (options not given keep their value).

    Example: cbr verify-policy set my-vault --every 7 --share 25"""
    spec = _common(every, start_at, enabled)
    if share is not None:
        spec["share_percent"] = share
    _put(vault, "verify", spec, as_json)


# ------------------------------------------------------------------------------------ restore tests
@restore_test_app.command("set")
@handle_errors
def restore_test_set(vault: str = _VAULT, every: int = _EVERY, start_at: str = _START, enabled: bool = _ENABLED,
                     backup: str = typer.Option(None, "--backup", help="Which backup: latest (default) or oldest."),
                     resource: str = typer.Option(None, "--resource", help="Only this resource's backups (id, name "
                                                                           "or prefix; '' for any)."),
                     check_command: str = typer.Option(None, "--check-command", help="Operator only: a command run "
                                                       "in the scratch place after the checks ($OPENCBR_RESTORE_DIR, "
                                                       "$OPENCBR_BACKUP_ID); exit 0 passes. '' removes it."),
                     check_timeout: int = typer.Option(None, "--check-timeout", help="Seconds the command may run."),
                     as_json: bool = JSON_OPTION):
    """Create or change the vault's restore-test policy (options not given keep their value).

    Example: cbr restore-test set my-vault --every 7 --backup latest"""
    spec = _common(every, start_at, enabled)
    if backup is not None:
        spec["backup_rule"] = backup
    if resource is not None:
        spec["resource_id"] = refs.resolve_resource(client(), resource)["id"] if resource else ""
    if check_command is not None:
        spec["check_command"] = shlex.split(check_command)
    if check_timeout is not None:
        spec["check_timeout_seconds"] = check_timeout
    _put(vault, "restore_test", spec, as_json)


def _register(app: typer.Typer, kind: str, what: str) -> None:
    @app.command("show", help=f"The vault's {what} policy and its last result.")
    @handle_errors
    def show(vault: str = _VAULT, as_json: bool = JSON_OPTION):
        c = client()
        _show(c.get(f"/vaults/{refs.resolve(c, refs.VAULT, vault)}/checks/{kind}")["check"], as_json)

    @app.command("delete", help=f"Remove the vault's {what} policy (past tasks stay in the task list).")
    @handle_errors
    def delete(vault: str = _VAULT):
        c = client()
        c.request("DELETE", f"/vaults/{refs.resolve(c, refs.VAULT, vault)}/checks/{kind}")
        typer.echo(f"{what} policy deleted")

    @app.command("run", help=f"Run the vault's {what} now, outside its schedule (--wait: follow it; exit 1 if "
                              "it fails).")
    @handle_errors
    def run(vault: str = _VAULT, wait: bool = WAIT_OPTION, as_json: bool = JSON_OPTION):
        _run(vault, kind, wait, as_json)


_register(verify_policy_app, "verify", "verify")
_register(restore_test_app, "restore_test", "restore test")
