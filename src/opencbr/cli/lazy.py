"""Command groups imported only when they are used.

``cbr backup create`` needs backups.py and what it imports, not the 25 other command modules (each with
its imports: rich, zoneinfo, the domain's modules...). Every ``cbr`` run pays for what it imports, and
with a cold page cache that is hundreds of files read from disk before the first request is sent.

The top-level group lists every command from a registry (name, help, loader); the loader runs only when
the command is invoked or its own help is asked for. ``cbr --help`` and shell completion of the top
level list the registry's names and help without loading anything.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperCommand, TyperGroup

if TYPE_CHECKING:
    from typer import _click


@dataclass(frozen=True)
class Lazy:
    """A top-level command or group: ``load`` returns its ``typer.Typer`` (a group) or its function (a
    command). ``help`` is what ``cbr --help`` shows for it; a test checks that it matches the loaded help."""

    name: str
    help: str
    load: Callable[[], Any]


def build(entry: Lazy) -> _click.Command:
    """The click command of a loaded entry, as ``app.add_typer`` / ``app.command`` would have made it."""
    loaded = entry.load()
    if isinstance(loaded, typer.Typer):
        cmd = typer.main.get_group(loaded)
    else:
        single = typer.Typer(add_completion=False)
        single.command(entry.name)(loaded)
        cmd = typer.main.get_command(single)
    cmd.name = entry.name
    return cmd


class LazyGroup(TyperGroup):
    """A TyperGroup whose entries from ``registry`` are loaded on first use. ``order`` is the listing
    order of the commands, the group's own (defined eagerly) and the lazy ones; any not in it follow."""

    registry: tuple[Lazy, ...] = ()
    order: tuple[str, ...] = ()

    def __init__(self, **attrs: Any):
        super().__init__(**attrs)
        self._lazy = {e.name: e for e in self.registry}
        self._listing = False
        for e in self.registry:  # placeholders that carry the name and help for listings
            self.commands[e.name] = TyperCommand(name=e.name, help=e.help)

    @contextlib.contextmanager
    def _names_only(self) -> Iterator[None]:
        self._listing = True
        try:
            yield
        finally:
            self._listing = False

    def list_commands(self, ctx: _click.Context | None) -> list[str]:
        unordered = [n for n in self.commands if n not in self.order]  # none is ever hidden
        return [n for n in self.order if n in self.commands] + unordered

    def get_command(self, ctx: _click.Context | None, cmd_name: str) -> _click.Command | None:
        entry = self._lazy.pop(cmd_name, None) if not self._listing else None
        if entry is not None:
            self.commands[cmd_name] = build(entry)
        return self.commands.get(cmd_name)

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        with self._names_only():
            super().format_help(ctx, formatter)

    def shell_complete(self, ctx: _click.Context, incomplete: str) -> list:
        with self._names_only():
            return super().shell_complete(ctx, incomplete)
