"""The ``cbr`` command (also installed as ``opencbr``): an API client, plus ``serve`` and ``worker``."""

from __future__ import annotations

import logging

import typer
from rich.panel import Panel

from opencbr import __version__
from opencbr.cli.admin import admin_app
from opencbr.cli.backups import backup_app
from opencbr.cli.client import client_config_path, write_client_config
from opencbr.cli.inventory import disk_app, fs_app, server_app
from opencbr.cli.output import JSON_OPTION, client, console, details, handle_errors, print_json
from opencbr.cli.policies import policy_app, scheduler_command
from opencbr.cli.tasks import task_app
from opencbr.cli.vaults import vault_app

app = typer.Typer(help="OpenCBR: Cloud Backup and Recovery you run yourself.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
app.add_typer(vault_app, name="vault")
app.add_typer(backup_app, name="backup")
app.add_typer(policy_app, name="policy")
app.command("scheduler")(scheduler_command)
app.add_typer(disk_app, name="disk")
app.add_typer(server_app, name="server")
app.add_typer(fs_app, name="fs")
app.add_typer(task_app, name="task")
app.add_typer(admin_app, name="admin")


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


@app.command()
def serve(data_dir: str = typer.Option(None, "--data-dir", help="Default ./data or OPENCBR_DATA_DIR."),
          listen: str = typer.Option(None, "--listen", help="host:port, default 127.0.0.1:8080."),
          write_config: bool = typer.Option(True, "--write-config/--no-write-config",
                                            help="Write the CLI configuration file for the bootstrap user.")):
    """Start the service: API, console, scheduler and workers in one process."""
    from opencbr.config import load_settings
    from opencbr.server import Service

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    settings = load_settings(data_dir=data_dir, listen=listen)
    service = Service(settings)
    info = service.bootstrap()

    def ready():
        path = client_config_path()
        if write_config:
            write_client_config(settings.url, info.project_id, info.access_key, info.secret_key)
        console.print(Panel.fit(
            f"[bold]OpenCBR {__version__}[/bold] is running\n\n"
            f"URL         {settings.url}\n"
            f"Console     {settings.url}/console/\n"
            f"Region      {settings.region}\n"
            f"Project ID  {info.project_id}\n"
            f"AK          {info.access_key}\n"
            f"SK          {info.secret_key}\n"
            f"Data        {settings.data_dir}\n"
            + (f"CLI config  {path} (try: cbr vault list)" if write_config else ""),
            title="ready"), highlight=False)

    service.run(on_ready=ready)


@app.command()
def worker(count: int = typer.Option(2, "--count", help="Worker threads."),
           data_dir: str = typer.Option(None, "--data-dir", help="Default ./data or OPENCBR_DATA_DIR.")):
    """Run workers only (another machine sharing the catalog and the object store)."""
    from opencbr.config import load_settings
    from opencbr.server import run_workers

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    run_workers(load_settings(data_dir=data_dir), count)


if __name__ == "__main__":  # pragma: no cover
    app()
