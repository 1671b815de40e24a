"""cli/coercion.py: command-line values converted as typer converts them, without importing pydantic."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import typer
from typer._click.exceptions import BadParameter
from typer._coercion import build_runtime_param, resolve_type_descriptor
from typer.models import OptionInfo

from opencbr.cli.coercion import _UNDECIDED, QuickRuntimeParam, quick_value

PYDANTIC = ("pydantic", "pydantic_core", "annotated_types")

# (annotation, value, whether the quick path decides it)
CASES = [
    (str, "web1", True), (str, "", True), (str, " spaced ", True), (str, "ünïcode", True), (str, b"bytes", False),
    (bool, True, True), (bool, False, True), (bool, "yes", False),
    (int, 5, True), (int, "5", True), (int, "-12", True), (int, "007", True), (int, "123456789012345678901234", True),
    (int, "+5", False), (int, " 5", False), (int, "1_000", False), (int, "5.0", False), (int, "x", False),
    (int, "\uff11\uff12", False), (int, "", False),
    (float, 1.5, True), (float, "2", True), (float, "-0.25", True), (float, "1e3", False), (float, "inf", False),
    (float, "nope", False), (float, 2, False),
    (list[str], ("a", "b"), True), (list[str], ["a"], True), (list[str], (), True), (list[str], ("a", 1), False),
]


def _typer_result(annotation, value):
    """What typer's own (pydantic) conversion returns for ``value``, or the message it fails with."""
    runtime = build_runtime_param(resolve_type_descriptor(annotation, OptionInfo()))
    try:
        return runtime._coerce_value(value, param=None, ctx=None)
    except BadParameter as e:
        return ("error", e.message)


def _quick_result(annotation, value):
    runtime = QuickRuntimeParam(resolve_type_descriptor(annotation, OptionInfo()))
    try:
        return runtime._coerce_value(value, param=None, ctx=None)
    except BadParameter as e:
        return ("error", e.message)


@pytest.mark.parametrize(("annotation", "value", "quick"), CASES)
def test_values_convert_as_typer_converts_them(annotation, value, quick):
    expected = _typer_result(annotation, value)
    got = _quick_result(annotation, value)
    assert got == expected and type(got) is type(expected)
    decided = quick_value(resolve_type_descriptor(annotation, OptionInfo()), value) is not _UNDECIDED
    assert decided == quick


def test_bounds_and_parsers_go_to_typer():
    bounded = resolve_type_descriptor(int, OptionInfo(min=1, max=10))
    assert quick_value(bounded, "5") is _UNDECIDED
    assert _quick_result_for(bounded, "50")[0] == "error"
    parsed = resolve_type_descriptor(str, OptionInfo(parser=str.upper))
    assert quick_value(parsed, "a") is _UNDECIDED
    assert _quick_result_for(parsed, "a") == "A"


def _quick_result_for(descriptor, value):
    try:
        return QuickRuntimeParam(descriptor)._coerce_value(value, param=None, ctx=None)
    except BadParameter as e:
        return ("error", e.message)


def test_a_bad_number_on_the_command_line_reads_as_before():
    from typer.testing import CliRunner

    from opencbr.cli.main import app

    r = CliRunner().invoke(app, ["alarm", "deliveries", "--limit", "many"])
    assert r.exit_code == 2
    text = " ".join(r.output.replace("\u2502", " ").split())
    assert ("Invalid value for '--limit': Input should be a valid integer, unable to parse string as an "
            "integer") in text  # (pydantic's message, from typer's own conversion)


_RUN = """
import atexit, sys
atexit.register(lambda: print("MODULES", *sorted(sys.modules), file=sys.stderr))
from opencbr.cli.main import app
app(prog_name="cbr")
"""


@pytest.mark.parametrize("args", [
    ["backup", "create", "v1", "--name", "n", "--resource", "a", "--resource", "b", "--wait", "--json"],
    ["backup", "list", "--limit", "5", "--json"],
    ["alarm", "deliveries", "--limit", "7", "--json"],
])
def test_a_command_converts_its_parameters_without_pydantic(args):
    """Structural: the command runs to its first request (refused: nothing listens on port 9), having
    converted str, list[str], bool and int parameters, and pydantic was never imported."""
    env = {**os.environ, "OPENCBR_ENDPOINT": "http://127.0.0.1:9", "OPENCBR_PROJECT_ID": "p" * 32,
           "OPENCBR_AK": "AK", "OPENCBR_SK": "SK", "OPENCBR_CLIENT_CONFIG": os.devnull}
    proc = subprocess.run([sys.executable, "-c", _RUN, *args], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the refused connection, not a usage error (2)
    modules = set(proc.stderr.splitlines()[-1].split()[1:])
    assert "opencbr.cli.coercion" in modules
    assert not {m for m in modules if m.split(".")[0] in PYDANTIC}


def test_typer_is_the_version_this_was_checked_against():
    """The hook replaces a method of typer's internals (``_TyperParameter.get_runtime_param``)."""
    assert typer.__version__ == "0.29.2"
