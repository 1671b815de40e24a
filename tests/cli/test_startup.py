"""`cbr`'s own fixed cost: a command imports its own command group and the shared helpers, not the other
groups' modules, rich (unless it prints a table or a bar) or an HTTP library's command line."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer

from opencbr.cli.lazy import build
from opencbr.cli.main import COMMANDS, app
from tests.support.clients import cli

#: Modules every API command may import: the entry point and the helpers every group shares.
SHARED = {"opencbr.cli", "opencbr.cli.main", "opencbr.cli.lazy", "opencbr.cli.client", "opencbr.cli.output",
          "opencbr.cli.refs", "opencbr.cli.messages", "opencbr.cli.params", "opencbr.cli.waiting",
          "opencbr.cli.coercion"}
#: Never on the path of a command that prints JSON (pydantic: cli/coercion.py).
HEAVY = ("rich", "httpx", "click", "pygments", "pydantic", "pydantic_core", "annotated_types")

_RUN = """
import atexit, sys
atexit.register(lambda: print("MODULES", *sorted(sys.modules), file=sys.stderr))
from opencbr.cli.main import app
app(prog_name="cbr")
"""


def imported(args: list[str], env: dict | None = None) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``cbr ARGS`` in a fresh interpreter; its result and the modules it had imported at exit."""
    proc = subprocess.run([sys.executable, "-c", _RUN, *args], capture_output=True, text=True, env=env, timeout=120)
    line = [ln for ln in proc.stderr.splitlines() if ln.startswith("MODULES ")][-1]
    return proc, set(line.split()[1:])


def cli_modules(modules: set[str]) -> set[str]:
    return {m for m in modules if m.startswith("opencbr.cli")}


def heavy(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in HEAVY}


def test_version_imports_no_command_group_and_no_rich_or_httpx():
    proc, modules = imported(["version"])
    assert proc.returncode == 0 and proc.stdout.strip()
    assert cli_modules(modules) <= SHARED, cli_modules(modules) - SHARED
    assert not heavy(modules)


def test_help_lists_every_group_without_importing_them():
    proc, modules = imported(["--help"])
    assert proc.returncode == 0
    for entry in COMMANDS:
        assert entry.name in proc.stdout
    assert cli_modules(modules) <= SHARED, cli_modules(modules) - SHARED
    assert "httpx" not in {m.split(".")[0] for m in modules}


@pytest.mark.parametrize(("group", "own"), [
    ("fs", {"opencbr.cli.inventory"}),
    ("task", {"opencbr.cli.tasks"}),
    ("policy", {"opencbr.cli.policies"}),
    # the vault commands include the tags, locks, replication and resource moves of a vault
    ("vault", {"opencbr.cli.vaults", "opencbr.cli.tags", "opencbr.cli.vault_locks", "opencbr.cli.replication",
               "opencbr.cli.quotas"}),
])
def test_a_group_imports_its_own_modules_only(group, own):
    proc, modules = imported([group, "--help"])
    assert proc.returncode == 0
    assert cli_modules(modules) <= SHARED | own, cli_modules(modules) - SHARED - own


def test_completion_lists_commands_of_groups_loaded_for_it():
    proc, _ = imported([], env={**os.environ, "_CBR_COMPLETE": "complete_bash", "COMP_WORDS": "cbr vault ",
                                "COMP_CWORD": "2"})
    assert {"create", "list", "tag", "lock", "replicate"} <= set(proc.stdout.split())
    proc, modules = imported([], env={**os.environ, "_CBR_COMPLETE": "complete_bash", "COMP_WORDS": "cbr ba",
                                      "COMP_CWORD": "1"})
    assert proc.stdout.split() == ["backup"] and cli_modules(modules) <= SHARED


def test_python_m_opencbr_cli_is_cbr():
    proc = subprocess.run([sys.executable, "-m", "opencbr.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "Usage: cbr " in proc.stdout and "restore-test" in proc.stdout


def test_registry_help_is_the_loaded_commands_help():
    """`cbr --help` shows the registry's help without loading; it must say what the loaded command says."""
    for entry in COMMANDS:
        assert build(entry).help == entry.help, entry.name


def test_every_command_is_listed_in_the_registry_order():
    root = typer.main.get_command(app)
    assert root.list_commands(None) == ["scheduler", "quota", "version", "whoami", "serve", "worker",
                                        *(e.name for e in COMMANDS[4:])]


def test_backup_create_wait_json_imports_the_backup_group_only(server, tmp_path):
    """The path a script (and bench/realtree.py) takes: no rich, no httpx, no other group's modules."""
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f.txt").write_text("startup\n")
    sfx = server.backend
    for args in (("fs", "register", "--name", f"startup-{sfx}", "--path", str(tree)),
                 ("vault", "create", "--name", f"startup-{sfx}", "--type", "turbo", "--size", "10",
                  "--resource", f"startup-{sfx}")):
        r = cli(server, *args, "--json")
        assert r.code == 0, r.err
    proc, modules = imported(["backup", "create", f"startup-{sfx}", "--wait", "--json"], env=server.cli_env())
    assert proc.returncode == 0, proc.stderr
    assert '"status": "available"' in proc.stdout
    own = {"opencbr.cli.backups", "opencbr.cli.replication", "opencbr.cli.sharing"}
    assert cli_modules(modules) <= SHARED | own, cli_modules(modules) - SHARED - own
    assert not heavy(modules), heavy(modules)


_TEARDOWN = """
import sys

class _Witness:
    def __del__(self):
        print("TEARDOWN", file=sys.__stderr__, flush=True)

witness = _Witness()  # freed by the interpreter's teardown of its modules, if there is one
import atexit
atexit.register(lambda: print("ATEXIT", file=sys.__stderr__, flush=True))
from opencbr.cli.main import app
app(prog_name="cbr")
"""


def _ended(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _TEARDOWN, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args,code", [(["version"], 0), (["backup", "create", "--help"], 0),
                                       (["backup", "no-such-command"], 2)])
def test_a_client_command_ends_without_the_interpreters_teardown(args, code):
    """Its output and exit status as always, its atexit handlers run, the modules are not freed one by one."""
    proc = _ended(args)
    assert proc.returncode == code
    assert ("Usage:" in proc.stdout + proc.stderr) if code else proc.stdout.strip()
    assert "ATEXIT" in proc.stderr
    assert "TEARDOWN" not in proc.stderr


@pytest.mark.parametrize("command", ["serve", "worker", "scheduler"])
def test_the_service_processes_end_through_the_whole_teardown(command):
    proc = _ended([command, "--help"])
    assert proc.returncode == 0 and "Usage:" in proc.stdout
    assert "ATEXIT" in proc.stderr and "TEARDOWN" in proc.stderr


def test_a_command_run_inside_another_program_returns_to_it():
    """(typer's CliRunner, as a program embedding cbr would: the output is not the process's own.)"""
    code = ("from typer.testing import CliRunner\nfrom opencbr.cli.main import app\n"
            "r = CliRunner().invoke(app, ['version'])\nprint('BACK', r.exit_code, r.stdout.strip())")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("BACK 0 "), proc.stdout + proc.stderr
