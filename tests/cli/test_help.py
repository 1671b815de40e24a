"""Help for people (issue "The first hour", item 12): every command and option explains itself, the main
commands show examples, and docs/cli.md is the CLI's own help, kept current."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import typer

from opencbr.cli.main import app
from opencbr.cli.reference import commands, render

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"
MAIN_COMMANDS = ["vault create", "backup create", "backup list", "backup restore", "backup ls", "disk register",
                 "server register", "fs register", "disk create-from-backup", "fs create-from-backup",
                 "policy create", "policy apply", "task watch"]


def test_every_command_and_option_has_help():
    missing = []
    for path, cmd in commands(typer.main.get_command(app)):
        if not (cmd.help or "").strip():
            missing.append(" ".join(path))
        missing += [f"{' '.join(path)} {p.name}" for p in cmd.params if not (getattr(p, "help", "") or "").strip()]
    assert not missing, missing


def test_main_commands_show_examples_in_help():
    for name in MAIN_COMMANDS:
        out = subprocess.run([sys.executable, "-m", "opencbr.cli.main", *name.split(), "--help"],
                             capture_output=True, text=True, env={"COLUMNS": "120", "PATH": "/usr/bin:/bin",
                                                                  "PYTHONPATH": ":".join(sys.path)}).stdout
        assert "Example" in out and f"cbr {name}" in out, (name, out)


def test_docs_cli_md_is_current():
    assert DOCS.read_text() == render(app), \
        "docs/cli.md is out of date: run `python -m opencbr.cli.reference > docs/cli.md`"
