"""Per-file wall time of a test run, for scheduling the heaviest test files first.

``make test PYTEST_ARGS=--durations=0 > run.log`` prints every phase's duration; this sums them per test
file (the time one xdist worker spends on that file under ``--dist loadfile``) and writes
``tests/file_weights.json`` (files of at least ``--min`` seconds, heaviest first), which
``tests/conftest.py`` reads to start those files first:

    PYTHONPATH=src .venv/bin/python -m tools.test_weights run.log [--top 20]
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

LINE = re.compile(r"^\s*([0-9.]+)s (?:setup|call|teardown)\s+(\S[^:]*\.py)::")
WEIGHTS = Path(__file__).resolve().parent.parent / "tests" / "file_weights.json"


def file_seconds(log: str) -> dict[str, float]:
    """Seconds per test file, from the ``--durations`` lines of a pytest log."""
    per_file: dict[str, float] = defaultdict(float)
    for line in log.splitlines():
        m = LINE.match(line)
        if m:
            per_file[m.group(2)] += float(m.group(1))
    return dict(per_file)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log")
    p.add_argument("--min", type=float, default=20.0, help="leave out files faster than this (seconds)")
    p.add_argument("--top", type=int, default=0, help="print the N heaviest files")
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args(argv)
    secs = file_seconds(Path(a.log).read_text(errors="replace"))
    ranked = sorted(secs.items(), key=lambda kv: -kv[1])
    print(f"{len(secs)} files, {sum(secs.values()):.0f} s in all")
    for f, s in ranked[: a.top]:
        print(f"{s:8.1f} s  {f}")
    if not a.no_write:
        WEIGHTS.write_text(json.dumps({f: round(s) for f, s in ranked if s >= a.min}, indent=1) + "\n")
        print(f"wrote {WEIGHTS}")


if __name__ == "__main__":
    main()
