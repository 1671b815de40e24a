"""Printing: JSON for scripts (``--json``), Rich tables for people, errors on stderr."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from opencbr.cli.client import ApiClient, ClientConfig, ClientError

# Piped output is read by scripts and people alike: do not squeeze tables into 80 columns.
console = Console(width=None if sys.stdout.isatty() else 240)
err_console = Console(stderr=True)

JSON_OPTION = typer.Option(False, "--json", help="Print the result as JSON.")


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def table(rows: Iterable[dict], columns: Sequence[tuple[str, str]], title: str | None = None) -> None:
    t = Table(title=title, show_lines=False, header_style="bold")
    for _, header in columns:
        t.add_column(header)
    for row in rows:
        t.add_row(*[_cell(row, key) for key, _ in columns])
    console.print(t)


def _cell(row: dict, key: str) -> str:
    value: Any = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def details(obj: dict, fields: Sequence[tuple[str, str]], title: str | None = None) -> None:
    t = Table(show_header=False, title=title, box=None)
    t.add_column(style="bold")
    t.add_column()
    for key, label in fields:
        t.add_row(label, _cell(obj, key))
    console.print(t)


def client() -> ApiClient:
    return ApiClient(ClientConfig.load())


def handle_errors(fn: Callable) -> Callable:
    """Print a ClientError (the server's message) and exit 1 instead of a traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ClientError as e:
            prefix = f"{e.code}: " if e.code else ""
            err_console.print(f"[red]error:[/red] {prefix}{e.message}", highlight=False)
            raise typer.Exit(1) from None
    return wrapper
