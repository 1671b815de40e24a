"""The code stays clean: ruff (pinned in the test dependencies, configured in pyproject.toml) finds
nothing in src/, tests/, bench/ and tools/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=os.path.dirname(sys.executable)) or shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed; `make test` installs it from the test dependencies")
    out = subprocess.run([ruff, "check", "--no-cache", "src", "tests", "bench", "tools"], cwd=ROOT, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stdout + out.stderr
