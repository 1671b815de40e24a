"""The ``cbr`` command (also installed as ``opencbr``): an API client, plus ``serve``, ``worker`` and
``scheduler``, which start the service processes (cli/processes.py).

Each command group's module is imported only when the group is used (cli/lazy.py): the registry below
names every top-level command with the help ``cbr --help`` shows for it, and a loader that imports it.
Groups that other modules add commands to are put together in their loader."""

from __future__ import annotations

import atexit
import functools
import os
import sys
import threading

import typer

from opencbr import __version__
from opencbr.cli import coercion
from opencbr.cli.lazy import Lazy, LazyGroup
from opencbr.cli.output import JSON_OPTION, client, details, handle_errors, print_json

coercion.install()  # parameters converted without importing pydantic (cli/coercion.py)


@functools.cache
def _vault() -> typer.Typer:
    from opencbr.cli.quotas import vault_migrate_resources
    from opencbr.cli.replication import vault_replicate
    from opencbr.cli.tags import auto_bind, tag_app
    from opencbr.cli.vault_locks import lock_app
    from opencbr.cli.vaults import vault_app

    vault_app.add_typer(tag_app, name="tag")
    vault_app.command("auto-bind")(auto_bind)
    vault_app.command("replicate")(vault_replicate)
    vault_app.command("migrate-resources")(vault_migrate_resources)
    vault_app.add_typer(lock_app, name="lock")  # vault locks (docs/vault-lock.md)
    return vault_app


@functools.cache
def _backup() -> typer.Typer:
    from opencbr.cli import sharing
    from opencbr.cli.backups import backup_app
    from opencbr.cli.replication import backup_replicate

    backup_app.command("replicate")(backup_replicate)
    for name, command in (("share", sharing.backup_share), ("members", sharing.backup_members),
                          ("unshare", sharing.backup_unshare), ("shared", sharing.backup_shared),
                          ("accept", sharing.backup_accept), ("reject", sharing.backup_reject)):
        backup_app.command(name)(command)
    return backup_app


@functools.cache
def _admin() -> typer.Typer:
    from opencbr.cli.admin import admin_app
    from opencbr.cli.quotas import quota_admin_app

    admin_app.add_typer(quota_admin_app, name="quota")
    return admin_app


def _attr(module: str, name: str):
    """A loader of ``name`` from ``opencbr.cli.<module>``."""
    def load():
        import importlib

        return getattr(importlib.import_module(f"opencbr.cli.{module}"), name)
    return load


COMMANDS = (
    Lazy("scheduler", "Run the scheduler only (another machine sharing the catalog; several schedulers fire each\n"
         "execution once).", _attr("processes", "scheduler")),
    Lazy("quota", "Your project's quotas: what it has and what it may have (ask the operator for more).",
         _attr("quotas", "quota")),
    Lazy("serve", "Start the service: the API, console and scheduler in this process, and `workers` worker "
         "processes\nbeside it (restarted if they die; SIGTERM or Ctrl-C hands their running tasks back to "
         "the queue).", _attr("processes", "serve")),
    Lazy("worker", "Run workers only (on another machine sharing the catalog and the object store, with its own\n"
         "`host_group`). SIGTERM or Ctrl-C hands the running tasks back to the queue.",
         _attr("processes", "worker")),
    Lazy("vault", "Vaults: where backups are stored.", _vault),
    Lazy("resource-tags", "Tags of disks, servers and file systems (automatic association picks resources by them).",
         _attr("tags", "resource_tag_app")),
    Lazy("backup", "Backups: create, list, restore, verify, export.", _backup),
    Lazy("policy", "Policies: automatic backups at set times, and how long they are kept.",
         _attr("policies", "policy_app")),
    Lazy("disk", "Disks: disk-image files and block devices.", _attr("inventory", "disk_app")),
    Lazy("server", "Servers: a system disk and data disks with a power state.", _attr("inventory", "server_app")),
    Lazy("fs", "File systems: directory trees.", _attr("inventory", "fs_app")),
    Lazy("task", "Tasks (operation logs): backups, restores, deletions and other long work.",
         _attr("tasks", "task_app")),
    Lazy("admin", "Administration: projects, users, credentials, audit trail, organization policies.", _admin),
    Lazy("agent", "Agents: the opencbr-agent on each protected host.", _attr("agents", "agent_app")),
    Lazy("image", "Full-server images made from server backups, and new servers made from them.",
         _attr("images", "image_app")),
    Lazy("metrics", "Vault metrics over time: used_vault_size (GB) and vault_util (%).",
         _attr("metrics", "metrics_app")),
    Lazy("alarm", "Alarm targets (webhook, email) and deliveries.", _attr("alarms", "alarm_app")),
    Lazy("verify-policy", "A vault's verify policy: re-read a share of its backups every N days.",
         _attr("verification", "verify_policy_app")),
    Lazy("restore-test", "A vault's restore tests: restore a backup to a scratch place every N days and check it.",
         _attr("verification", "restore_test_app")),
)


#: Commands that run the service's processes: they end through the interpreter's whole teardown (atexit
#: handlers, child processes, logging), never :func:`quick_exit`.
SERVICE_COMMANDS = frozenset({"serve", "worker", "scheduler"})


def quick_exit(code) -> None:
    """End a client command at once, after its ``atexit`` handlers and with its output flushed, without the
    rest of the interpreter's teardown: freeing the ~400 modules a command imported (typer, pydantic,
    rich, http.client) took 0.03-0.2 s after the output was written (0.2-0.3 s for ``cbr backup create
    --help`` on a loaded machine; bench/README.md, realtree), time a user or script waits for nothing.
    Does nothing (the caller exits as usual) if another thread that is not a daemon still runs, if the
    code is a message rather than a number, if the output is not the process's own (a test runner or
    another program running the command in its process: ``CliRunner``), or if the output cannot be
    flushed (the usual teardown reports that)."""
    if code is not None and not isinstance(code, int):
        return
    if sys.stdout is not sys.__stdout__ or sys.stderr is not sys.__stderr__:
        return
    main = threading.main_thread()
    if any(t is not main and not t.daemon and t.is_alive() for t in threading.enumerate()):
        return
    atexit._run_exitfuncs()  # (logging's flush, and whatever a command registered)
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return
    os._exit(code or 0)


class CbrGroup(LazyGroup):
    registry = COMMANDS
    # The order `cbr --help` has always listed them in: commands, then groups.
    order = ("scheduler", "quota", "version", "whoami", "serve", "worker", *(e.name for e in COMMANDS[4:]))
    invoked: str | None = None  # the top-level command this run resolved

    def resolve_command(self, ctx, args):
        name, cmd, rest = super().resolve_command(ctx, args)
        self.invoked = name
        return name, cmd, rest

    def main(self, *args, **kwargs):
        try:
            return super().main(*args, **kwargs)
        except SystemExit as e:
            if kwargs.get("standalone_mode", True) and self.invoked is not None \
                    and self.invoked not in SERVICE_COMMANDS:
                quick_exit(e.code)
            raise


app = typer.Typer(help="OpenCBR: Cloud Backup and Recovery you run yourself.", no_args_is_help=True,
                  pretty_exceptions_enable=False, cls=CbrGroup)


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


if __name__ == "__main__":  # pragma: no cover
    app()
