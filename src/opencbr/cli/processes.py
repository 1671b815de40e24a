"""``cbr serve``, ``cbr worker`` and ``cbr scheduler``: they start the service processes
(:mod:`opencbr.server`) and tell the operator what happened; the processes themselves live there."""

from __future__ import annotations

import typer
from rich.panel import Panel

from opencbr import __version__
from opencbr.cli.client import client_config_path, write_client_config
from opencbr.cli.output import console
from opencbr.config import load_settings
from opencbr.domain.errors import CBRError

# Each command imports its process only when it runs: the API, the catalog and the workers are heavy,
# and every other `cbr` command (an API client) starts without them.


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(2)


def serve(data_dir: str = typer.Option(None, "--data-dir", help="Default ./data or OPENCBR_DATA_DIR."),
          listen: str = typer.Option(None, "--listen", help="host:port, default 127.0.0.1:8080 (OPENCBR_LISTEN)."),
          write_config: bool = typer.Option(True, "--write-config/--no-write-config",
                                            help="Write the CLI configuration file for the bootstrap user.")):
    """Start the service: the API, console and scheduler in this process, and `workers` worker processes
    beside it (restarted if they die; SIGTERM or Ctrl-C hands their running tasks back to the queue)."""
    from opencbr.server.serve import run_service

    settings = load_settings(data_dir=data_dir, listen=listen)

    def ready(info):
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
        run_service(settings, on_ready=ready)
    except CBRError as e:
        _fail(e.message)


def worker(count: int = typer.Option(2, "--count", help="Worker threads in this process."),
           data_dir: str = typer.Option(None, "--data-dir", help="Default ./data or OPENCBR_DATA_DIR."),
           supervised: bool = typer.Option(False, "--supervised", hidden=True,
                                           help="Started by `opencbr serve`: stop when it stops.")):
    """Run workers only (on another machine sharing the catalog and the object store, with its own
    `host_group`). SIGTERM or Ctrl-C hands the running tasks back to the queue."""
    from opencbr.server.worker import run_workers

    try:
        run_workers(load_settings(data_dir=data_dir), count, supervised=supervised)
    except CBRError as e:
        _fail(e.message)


def scheduler(data_dir: str = typer.Option(None, "--data-dir", help="Default ./data or OPENCBR_DATA_DIR.")):
    """Run the scheduler only (another machine sharing the catalog; several schedulers fire each
    execution once)."""
    from opencbr.server.scheduler import run_scheduler

    try:
        run_scheduler(load_settings(data_dir=data_dir))
    except CBRError as e:
        _fail(e.message)
