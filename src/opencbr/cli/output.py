"""Printing: JSON for scripts (``--json``), Rich tables for people, errors on stderr."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import typer

from opencbr.cli.client import ApiClient, ClientConfig, ClientError
from opencbr.cli.messages import for_cli
from opencbr.cli.refs import looks_like_id, short_ids

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def __getattr__(name: str) -> Console:
    """``console`` (stdout) and ``err_console`` (stderr) are made on first use: rich costs ~50 ms of
    imports (far more with a cold page cache), and many commands print JSON or a line of text."""
    if name not in ("console", "err_console"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    made = globals()
    if "console" not in made:
        from rich.console import Console

        # Piped output is read by scripts and people alike: do not squeeze tables into 80 columns (unless
        # COLUMNS says how wide to be).
        made["console"] = Console(width=None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 240)
        made["err_console"] = Console(stderr=True)
    return made[name]


def _out() -> Console:
    return __getattr__("console")


def _err() -> Console:
    return __getattr__("err_console")


#: The API's resource types in the words the CLI uses for them (``--json`` keeps the API's).
RESOURCE_TYPE_WORDS = {"OS::Nova::Server": "server", "OS::Cinder::Volume": "disk", "OS::Sfs::Turbo": "file system"}

JSON_OPTION = typer.Option(False, "--json", help="Print the result as JSON.")
YES_OPTION = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation (needed when not on a terminal).")


def confirm(question: str, yes: bool) -> None:
    """Destructive commands ask first on a terminal; elsewhere (scripts, pipes) they need ``--yes``."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ClientError(f"{question.rstrip('?')}: this cannot be undone, so it needs confirmation; "
                          "add --yes to run it without a terminal")
    if not typer.confirm(question, default=False, err=True):
        _err().print("nothing was changed")
        raise typer.Exit(1)


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def human(n: int | None) -> str:
    """A byte count for people: ``1.5 GiB``."""
    n = n or 0
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def table(rows: Iterable[dict], columns: Sequence[tuple[str, str]], title: str | None = None) -> None:
    """Ids are never cut: where the full ids do not fit the terminal, they are shown as the shortest
    prefixes (8 characters or more) that tell them apart, which every command accepts."""
    cells = [[_local(_cell(row, key), seconds=False) if _is_time(key) else _cell(row, key) for key, _ in columns]
             for row in rows]
    id_cols = {n for n in range(len(columns)) if any(looks_like_id(r[n]) for r in cells)}
    from rich.measure import Measurement

    console = _out()
    t = _table(cells, columns, id_cols, title)
    natural = Measurement.get(console, console.options.update(max_width=10**6), t).maximum
    if id_cols and natural > console.width:
        short = short_ids({r[n] for r in cells for n in id_cols if looks_like_id(r[n])})
        cells = [[short.get(v, v) if n in id_cols else v for n, v in enumerate(r)] for r in cells]
        t = _table(cells, columns, id_cols, title)
    console.print(t)


def _table(cells: list[list[str]], columns: Sequence[tuple[str, str]], id_cols: set[int],
           title: str | None) -> Table:
    from rich import box
    from rich.table import Table

    t = Table(title=title, show_lines=False, header_style="bold", box=box.SIMPLE_HEAD, pad_edge=False,
              collapse_padding=True, padding=(0, 1))
    for n, (key, header) in enumerate(columns):
        t.add_column(f"{header} ({local_zone()})" if _is_time(key) else header,
                     no_wrap=n in id_cols or _is_time(key), overflow="fold")
    for r in cells:
        t.add_row(*r)
    return t


def _is_time(key: str) -> bool:
    return key.endswith(("_at", "time")) and key != "local_time"


def local_zone() -> str:
    return datetime.now().astimezone().tzname() or "local"


def parse_utc(value: str) -> datetime | None:
    """A time from the API (UTC, with or without ``Z``), or None if it is not one."""
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _local(value: str, *, seconds: bool = True) -> str:
    """An API time in this machine's zone (tables), or in it and in UTC (``show``)."""
    t = parse_utc(value) if value else None
    if t is None:
        return value
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M"
    local = t.astimezone()
    if not seconds:
        return local.strftime(fmt)
    if local.utcoffset() == timedelta(0):
        return f"{local.strftime(fmt)} UTC"
    return f"{local.strftime(fmt)} {local.tzname()} ({t.astimezone(timezone.utc).strftime('%H:%M:%S')} UTC)"


def _cell(row: dict, key: str) -> str:
    value: Any = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if key.endswith("type") and value in RESOURCE_TYPE_WORDS:
        return RESOURCE_TYPE_WORDS[value]
    return str(value)


def details(obj: dict, fields: Sequence[tuple[str, str]], title: str | None = None) -> None:
    from rich.table import Table

    t = Table(show_header=False, title=title, box=None)
    t.add_column(style="bold")
    t.add_column()
    for key, label in fields:
        t.add_row(label, _local(_cell(obj, key)) if _is_time(key) else _cell(obj, key))
    _out().print(t)


def client() -> ApiClient:
    return ApiClient(ClientConfig.load())


def handle_errors(fn: Callable) -> Callable:
    """Print a ClientError (the server's message) and exit 1 instead of a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ClientError as e:
            from rich.markup import escape

            code = f" [dim]({e.code})[/dim]" if e.code else ""
            _err().print(f"[red]error:[/red] {escape(for_cli(e.message))}{code}", highlight=False)
            raise typer.Exit(1) from None
    return wrapper
