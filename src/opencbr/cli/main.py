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


def _start_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)


def _catalog_trouble(settings, e: Exception) -> str:
    """What to tell an operator whose catalog cannot be opened, instead of a driver's traceback."""
    reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0][:300]
    where = settings.effective_catalog_url
    if where.startswith("sqlite"):
        return (f"the catalog {where.split('///', 1)[-1]} cannot be read ({reason}); it may be damaged. "
                f"The backups themselves are safe in the object store: move the damaged file aside, start "
                f"again (a new, empty catalog is made), then recreate each vault's catalog from the store "
                f"with `cbr admin vault stored` and `cbr admin vault rebuild <vault-id>`")
    return (f"the catalog database cannot be used ({reason}). Check `catalog_url` (OPENCBR_CATALOG_URL) and "
            f"that the database is up; if its contents were lost, start on an empty database and recreate each "
            f"vault's catalog from the store with `cbr admin vault rebuild <vault-id>`")


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(2)


@app.command()
def serve(data_dir: str = typer.Option(None, "--data-dir", help="Default ./data or OPENCBR_DATA_DIR."),
          listen: str = typer.Option(None, "--listen", help="host:port, default 127.0.0.1:8080 (OPENCBR_LISTEN)."),
          write_config: bool = typer.Option(True, "--write-config/--no-write-config",
                                            help="Write the CLI configuration file for the bootstrap user.")):
    """Start the service: the API, console and scheduler in this process, and `workers` worker processes
    beside it (restarted if they die; SIGTERM or Ctrl-C hands their running tasks back to the queue)."""
    from sqlalchemy.exc import SQLAlchemyError

    from opencbr.config import load_settings
    from opencbr.domain.errors import CBRError
    from opencbr.server import Service

    _start_logging()
    settings = load_settings(data_dir=data_dir, listen=listen)
    try:
        service = Service(settings)
        info = service.bootstrap()
    except SQLAlchemyError as e:
        _fail(_catalog_trouble(settings, e))

    def ready():
        path = client_config_path()
        if write_config:
            write_client_config(settings.url, info.project_id, info.access_key, info.secret_key)
        sk = (f"SK          {info.secret_key}\n" if info.created else
              "SK          (shown on first start only; a new one: cbr admin credential create)\n")
        console.print(Panel.fit(
            f"[bold]OpenCBR {__version__}[/bold] is running\n\n"
            f"URL         {settings.url}\n"
            f"Console     {settings.url}/console/\n"
            f"Region      {settings.region}\n"
            f"Project ID  {info.project_id}\n"
            f"AK          {info.access_key}\n"
            + sk +
            f"Data        {settings.data_dir}\n"
            f"Workers     {settings.workers} process(es), host group {settings.host_group}\n"
            + (f"CLI config  {path} (try: cbr vault list)" if write_config else ""),
            title="ready"), highlight=False)

    try:
        service.run(on_ready=ready)
    except CBRError as e:
        service.shutdown()
        _fail(e.message)


@app.command()
def worker(count: int = typer.Option(2, "--count", help="Worker threads in this process."),
           data_dir: str = typer.Option(None, "--data-dir", help="Default ./data or OPENCBR_DATA_DIR."),
           supervised: bool = typer.Option(False, "--supervised", hidden=True,
                                           help="Started by `opencbr serve`: stop when it stops.")):
    """Run workers only (on another machine sharing the catalog and the object store, with its own
    `host_group`). SIGTERM or Ctrl-C hands the running tasks back to the queue."""
    from sqlalchemy.exc import SQLAlchemyError

    from opencbr.config import load_settings
    from opencbr.server import run_workers

    _start_logging()
    settings = load_settings(data_dir=data_dir)
    try:
        run_workers(settings, count, supervised=supervised)
    except SQLAlchemyError as e:
        _fail(_catalog_trouble(settings, e))


if __name__ == "__main__":  # pragma: no cover
    app()
