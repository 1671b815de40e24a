"""engine.load_operations: a worker imports every operation's modules at its start, so that none of its
tasks imports them; the list must name every module the repository imports on first use."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import opencbr.engine as engine

ENGINE = Path(engine.__file__).parent


def _first_use_imports() -> set[str]:
    """The engine's own modules that repository.py imports inside its functions."""
    tree = ast.parse((ENGINE / "repository.py").read_text())
    found = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
                    found.add(node.module)
    return found


def test_every_module_loaded_on_first_use_is_listed():
    first_use = _first_use_imports()
    assert {"tree", "disk.backup", "disk.export", "chunks.gc"} <= first_use  # (the scan finds them)
    assert first_use <= engine.operation_modules()
    assert {"tree.backup", "tree.restore", "tree.verify", "tree.stored"} <= engine.operation_modules()


def test_a_fresh_process_has_them_all_after_loading():
    code = ("import sys, opencbr.engine as e\n"
            "names = ['opencbr.engine.' + n for n in e.operation_modules()]\n"
            "before = [n for n in names if n in sys.modules]\n"
            "e.load_operations()\n"
            "print(len(before), sum(n in sys.modules for n in names), len(names))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    before, after, total = map(int, out)
    assert before < total  # importing the package alone does not load them (they are lazy)
    assert after == total
