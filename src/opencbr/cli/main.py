"""The ``cbr`` command (also installed as ``opencbr``): an API client, plus ``serve``, ``worker`` and
``scheduler``, which start the service processes (cli/processes.py)."""

from __future__ import annotations

import typer

from opencbr import __version__
from opencbr.cli.admin import admin_app
from opencbr.cli.agents import agent_app
from opencbr.cli.alarms import alarm_app
from opencbr.cli.backups import backup_app
from opencbr.cli.images import image_app
from opencbr.cli.inventory import disk_app, fs_app, server_app
from opencbr.cli.metrics import metrics_app
from opencbr.cli.output import JSON_OPTION, client, details, handle_errors, print_json
from opencbr.cli.policies import policy_app
from opencbr.cli.processes import scheduler, serve, worker
from opencbr.cli.quotas import quota, quota_admin_app, vault_migrate_resources
from opencbr.cli.replication import backup_replicate, vault_replicate
from opencbr.cli.sharing import (
    backup_accept,
    backup_members,
    backup_reject,
    backup_share,
    backup_shared,
    backup_unshare,
)
from opencbr.cli.tags import auto_bind, resource_tag_app, tag_app
from opencbr.cli.tasks import task_app
from opencbr.cli.vault_locks import lock_app
from opencbr.cli.vaults import vault_app
from opencbr.cli.verification import restore_test_app, verify_policy_app

app = typer.Typer(help="OpenCBR: Cloud Backup and Recovery you run yourself.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.add_typer(vault_app, name="vault")
vault_app.add_typer(tag_app, name="tag")
vault_app.command("auto-bind")(auto_bind)
app.add_typer(resource_tag_app, name="resource-tags")
app.add_typer(backup_app, name="backup")
app.add_typer(policy_app, name="policy")
app.command()(scheduler)
app.add_typer(disk_app, name="disk")
app.add_typer(server_app, name="server")
app.add_typer(fs_app, name="fs")
app.add_typer(task_app, name="task")
app.add_typer(admin_app, name="admin")
app.add_typer(agent_app, name="agent")
backup_app.command("replicate")(backup_replicate)
vault_app.command("replicate")(vault_replicate)
for _name, _command in (("share", backup_share), ("members", backup_members), ("unshare", backup_unshare),
                        ("shared", backup_shared), ("accept", backup_accept), ("reject", backup_reject)):
    backup_app.command(_name)(_command)
app.command("quota")(quota)
admin_app.add_typer(quota_admin_app, name="quota")
vault_app.command("migrate-resources")(vault_migrate_resources)
app.add_typer(image_app, name="image")
vault_app.add_typer(lock_app, name="lock")  # vault locks (docs/vault-lock.md)
app.add_typer(metrics_app, name="metrics")
app.add_typer(alarm_app, name="alarm")
app.add_typer(verify_policy_app, name="verify-policy")
app.add_typer(restore_test_app, name="restore-test")


@app.command()
def version():
    """Print the version."""
    typer.echo(__version__)


@app.command()
@handle_errors
def whoami(as_json: bool = JSON_OPTION):
    """Who the configured credentials belong to."""
    me = client().get("/iam/whoami")
    print_json(me) if as_json else details(me, [("user_name", "User"), ("role", "Role"), ("project_id", "Project"),
                                                ("account_id", "Account"), ("access_key", "AK")])


app.command()(serve)
app.command()(worker)

if __name__ == "__main__":  # pragma: no cover
    app()
