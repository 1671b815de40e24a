"""``docs/cli.md``, generated from the CLI itself: every command with its help, arguments and options.

    python -m opencbr.cli.reference > docs/cli.md

A test compares the file with what this prints, so the reference cannot fall behind the CLI.
"""

from __future__ import annotations

from collections.abc import Iterator

import typer

HEADER = """# The `cbr` command line

Generated from the CLI itself (`python -m opencbr.cli.reference > docs/cli.md`); a test keeps it current.
Every command also prints this with `--help`. Things are named by their id, their name (when unique) or the
first characters of their id, as tables show them; every command takes `--json`.
"""


def commands(group, path: tuple[str, ...] = ("cbr",)) -> Iterator[tuple[tuple[str, ...], object]]:
    """Every command under ``group``, depth first, in the order ``--help`` lists them."""
    for name in group.list_commands(None) if hasattr(group, "list_commands") else []:
        cmd = group.get_command(None, name)
        if cmd is None or getattr(cmd, "hidden", False):
            continue
        if hasattr(cmd, "commands"):
            yield from commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


def _help(text: str | None) -> list[str]:
    """A command's help: a paragraph, then any indented example lines as a code block."""
    lines = (text or "").strip().splitlines()
    out, code = [], []
    for line in lines:
        if line.startswith("  ") or (code and not line.strip()):
            code.append(line.strip())
        elif line.strip().lower().startswith("example"):
            rest = line.split(":", 1)[1].strip() if ":" in line else ""
            if rest:
                code.append(rest)
        else:
            out.append(line.strip())
    text_out = [" ".join(" ".join(out).split())] if out else []
    return text_out + (["", "```sh", *[c for c in code if c], "```"] if code else [])


def _param_row(p) -> str:
    if p.param_type_name == "argument":
        name = f"`{(p.metavar or p.name).upper()}`"
    else:
        name = " / ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
    default = p.default if p.param_type_name == "option" and p.default not in (None, False, (), []) \
        and not p.required else None
    text = (getattr(p, "help", "") or "").replace("|", "\\|")
    if p.required:
        text += " (required)"
    if default is not None and not isinstance(default, bool):
        text += f" Default: `{default}`."
    return f"| {name} | {text} |"


def render(app: typer.Typer) -> str:
    root = typer.main.get_command(app)
    parts = [HEADER.rstrip("\n")]
    for path, cmd in commands(root):
        parts += ["", f"## {' '.join(path)}", "", *_help(cmd.help)]
        params = [p for p in cmd.params if p.name != "help"]
        if params:
            parts += ["", "| argument / option | meaning |", "| --- | --- |", *[_param_row(p) for p in params]]
    return "\n".join(parts) + "\n"


def main() -> None:
    from opencbr.cli.main import app

    print(render(app), end="")


if __name__ == "__main__":  # pragma: no cover
    main()
