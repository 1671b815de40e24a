"""By hand, on a protected host (docs/app-consistent.md)::

    python -m opencbr.agent.hooks check [--config /etc/opencbr-agent/agent.json]
    python -m opencbr.agent.hooks prepare-postgres DATA_DIR RECORD.json [--name HOOK]

``check`` prints what would be quiesced and whether it can be (JSON). ``prepare-postgres`` readies a
restored PostgreSQL data directory from a backup's hook record (``Quiesce.record(restore_material=True)``,
or one hook's outcome): backup label, tablespace map, the backup's WAL.
"""

from __future__ import annotations

import argparse
import json
import sys

from .plan import discover
from .postgres import prepare_restored_postgres
from .quiesce import check


def _postgres_details(record: dict, name: str | None) -> dict:
    hooks = record.get("hooks", [record])
    found = [h for h in hooks if h.get("kind") == "postgresql" and h.get("details", {}).get("backup_label")
             and name in (None, h.get("name"))]
    if len(found) != 1:
        names = ", ".join(h["name"] for h in found) or "none"
        raise SystemExit(f"the record holds {len(found)} PostgreSQL backup labels ({names}): choose one with --name")
    return found[0]["details"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m opencbr.agent.hooks")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="what would be quiesced, and whether it can be")
    c.add_argument("--config", help="the agent's configuration file (its hooks key)")
    p = sub.add_parser("prepare-postgres", help="ready a restored PostgreSQL data directory")
    p.add_argument("data_dir")
    p.add_argument("record", help="JSON: the backup's hook record, or one hook's outcome")
    p.add_argument("--name", help="the hook's name, when the record holds several clusters")
    args = parser.parse_args(argv)
    try:
        return _run(args)
    except (OSError, ValueError) as e:  # a missing or malformed file: say which, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "check":
        config = {}
        if args.config:
            with open(args.config) as f:
                raw = json.load(f)
            config = raw.get("hooks") or raw.get("app_consistency") or {}  # (the agent reads "hooks")
        results = check(discover(config))
        json.dump(results, sys.stdout, indent=2)
        print()
        return 0 if all(r["ok"] for r in results) else 1
    with open(args.record) as f:
        details = _postgres_details(json.load(f), args.name)
    for line in prepare_restored_postgres(args.data_dir, details):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
