"""``python -m opencbr.engine``: the engine on its own, for operators and the benchmark.

    python -m opencbr.engine --store file:///srv/objects --prefix vaults/v1 init [--no-encrypt]
    ... backup DISK --id ID [--parent ID] [--full] [--meta JSON]
    ... restore ID TARGET [--no-truncate]
    ... verify ID | export ID OUT | gc | usage | list | show ID | delete ID

The master key (32 bytes, hex) comes from ``--key-file`` (a file holding the hex), ``--key-hex`` or
``$OPENCBR_MASTER_KEY``. Results are printed as JSON on stdout; progress goes to stderr with
``--progress``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from ..domain.errors import CBRError
from ..storage import open_store
from .repository import Repository


def _master_key(a) -> bytes | None:
    raw = None
    if a.key_file:
        with open(a.key_file) as f:
            raw = f.read().strip()
    elif a.key_hex:
        raw = a.key_hex
    elif os.environ.get("OPENCBR_MASTER_KEY"):
        raw = os.environ["OPENCBR_MASTER_KEY"]
    if raw is None:
        return None
    key = bytes.fromhex(raw)
    if len(key) != 32:
        raise SystemExit("the master key must be 64 hex digits (32 bytes)")
    return key


def _progress(enabled: bool):
    if not enabled:
        return None
    last = [0.0]

    def cb(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 0.5 or done >= total:
            last[0] = now
            pct = 100.0 * done / total if total else 100.0
            print(f"\r{pct:5.1f}% {done}/{total}", end="", file=sys.stderr, flush=True)

    return cb


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m opencbr.engine", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="file:///abs/path or s3://bucket/prefix?endpoint_url=...")
    ap.add_argument("--prefix", default="", help="repository prefix inside the store (e.g. vaults/<id>)")
    ap.add_argument("--key-file")
    ap.add_argument("--key-hex")
    ap.add_argument("--progress", action="store_true")
    sp = ap.add_subparsers(dest="cmd", required=True)
    p = sp.add_parser("init")
    p.add_argument("--no-encrypt", action="store_true")
    p.add_argument("--block-size", type=int, default=None)
    p.add_argument("--pack-size", type=int, default=None)
    p = sp.add_parser("backup")
    p.add_argument("disk")
    p.add_argument("--id", required=True)
    p.add_argument("--parent")
    p.add_argument("--full", action="store_true")
    p.add_argument("--meta", default="{}")
    p = sp.add_parser("restore")
    p.add_argument("id")
    p.add_argument("target")
    p.add_argument("--no-truncate", action="store_true")
    p = sp.add_parser("verify")
    p.add_argument("id")
    p = sp.add_parser("export")
    p.add_argument("id")
    p.add_argument("out")
    sp.add_parser("gc")
    sp.add_parser("usage")
    sp.add_parser("list")
    p = sp.add_parser("show")
    p.add_argument("id")
    p = sp.add_parser("delete")
    p.add_argument("id")
    a = ap.parse_args(argv)

    store = open_store(a.store)
    key = _master_key(a)
    prog = _progress(a.progress)
    try:
        if a.cmd == "init":
            kw = {}
            if a.block_size:
                kw["block_size"] = a.block_size
            if a.pack_size:
                kw["pack_size"] = a.pack_size
            repo = Repository.create(store, a.prefix, key, encrypted=not a.no_encrypt, **kw)
            out = {"id": repo.id, "encrypted": repo.encrypted, "block_size": repo.block_size}
        else:
            repo = Repository.open(store, a.prefix, key)
            if a.cmd == "backup":
                out = repo.backup_disk(a.disk, backup_id=a.id, meta=json.loads(a.meta),
                                       parent_backup_id=a.parent, full=a.full, progress=prog).to_dict()
            elif a.cmd == "restore":
                out = repo.restore_disk(a.id, a.target, progress=prog, truncate=not a.no_truncate).to_dict()
            elif a.cmd == "verify":
                rep = repo.verify(a.id, progress=prog)
                out = rep.to_dict()
                if prog:
                    print(file=sys.stderr)
                print(json.dumps(out, indent=1))
                return 0 if rep.ok else 3
            elif a.cmd == "export":
                out = repo.export_disk(a.id, a.out, progress=prog).to_dict()
            elif a.cmd == "gc":
                out = repo.gc(progress=prog).to_dict()
            elif a.cmd == "usage":
                out = {"usage": repo.usage(), "stored_bytes": repo.stored_bytes()}
            elif a.cmd == "list":
                out = {"backups": repo.list_manifests()}
            elif a.cmd == "show":
                out = repo.read_manifest(a.id)
            elif a.cmd == "delete":
                repo.delete_backup(a.id)
                out = {"deleted": a.id}
            else:  # pragma: no cover - argparse rejects it
                raise SystemExit(2)
    except CBRError as e:
        if prog:
            print(file=sys.stderr)
        print(json.dumps({"error_code": e.code, "error_msg": e.message}), file=sys.stderr)
        return 1
    finally:
        store.close()
    if prog:
        print(file=sys.stderr)
    print(json.dumps(out, indent=1, default=str))
    return 0
