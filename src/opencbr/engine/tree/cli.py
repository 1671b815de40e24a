"""``python -m opencbr.engine.tree``: the tree engine on its own, for operators and the benchmark.

    python -m opencbr.engine.tree --store file:///srv/objects --prefix vaults/v1 init [--no-encrypt]
    ... backup DIR --id ID [--parent ID] [--full] [--meta JSON]
    ... restore ID TARGET [--path P] [--allow-nonempty] [--no-sync]
    ... ls ID [PATH]            (tree backups, and disk backups holding ext4/FAT file systems)
    ... get ID PATH TARGET      (one file or directory out of a *disk* backup)
    ... verify ID | show ID | list | usage

The master key comes from ``--key-file``/``--key-hex``/``$OPENCBR_MASTER_KEY`` exactly as for
``python -m opencbr.engine`` (whose ``init``, ``gc`` and ``delete`` work on the same repositories).
Results are JSON on stdout; ``--progress`` prints progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys

from ...domain.errors import CBRError
from ...storage import open_store
from ..cli import _master_key, _progress
from ..repository import Repository


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m opencbr.engine.tree", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="file:///abs/path or s3://bucket/prefix?endpoint_url=...")
    ap.add_argument("--prefix", default="", help="repository prefix inside the store (e.g. vaults/<id>)")
    ap.add_argument("--key-file")
    ap.add_argument("--key-hex")
    ap.add_argument("--progress", action="store_true")
    sp = ap.add_subparsers(dest="cmd", required=True)
    p = sp.add_parser("init")
    p.add_argument("--no-encrypt", action="store_true")
    p = sp.add_parser("backup")
    p.add_argument("dir")
    p.add_argument("--id", required=True)
    p.add_argument("--parent")
    p.add_argument("--full", action="store_true")
    p.add_argument("--meta", default="{}")
    p.add_argument("--workers", type=int)
    p.add_argument("--chunks", help="FastCDC avg,min,max in KiB (default: the engine's, see chunker.py)")
    p.add_argument("--zstd-level", type=int)
    p = sp.add_parser("restore")
    p.add_argument("id")
    p.add_argument("target")
    p.add_argument("--path")
    p.add_argument("--allow-nonempty", action="store_true")
    p.add_argument("--no-sync", action="store_true")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--processes", type=int, help="processes for a big restore (default: CPUs, at most 2)")
    p = sp.add_parser("ls")
    p.add_argument("id")
    p.add_argument("path", nargs="?", default="/")
    p = sp.add_parser("get")
    p.add_argument("id")
    p.add_argument("path")
    p.add_argument("target")
    p = sp.add_parser("verify")
    p.add_argument("id")
    p = sp.add_parser("show")
    p.add_argument("id")
    sp.add_parser("list")
    sp.add_parser("usage")
    a = ap.parse_args(argv)

    # (each command imports only what it runs: start-up is part of a re-backup's time)
    store = open_store(a.store)
    key = _master_key(a)
    prog = _progress(a.progress)
    code = 0
    try:
        if a.cmd == "init":
            repo = Repository.create(store, a.prefix, key, encrypted=not a.no_encrypt)
            out = {"id": repo.id, "encrypted": repo.encrypted}
        else:
            repo = Repository.open(store, a.prefix, key)
            if a.cmd == "backup":
                from .backup import backup_tree
                from .chunker import ChunkParams

                kw = {}
                if a.chunks:
                    avg, mn, mx = (int(x) << 10 for x in a.chunks.split(","))
                    kw["params"] = ChunkParams(avg, mn, mx)
                if a.zstd_level is not None:
                    kw["level"] = a.zstd_level
                out = backup_tree(repo, a.dir, backup_id=a.id, meta=json.loads(a.meta), parent_backup_id=a.parent,
                                  full=a.full, progress=prog, workers=a.workers, **kw).to_dict()
            elif a.cmd == "restore":
                from .restore import restore_tree

                out = restore_tree(repo, a.id, a.target, subpath=a.path, progress=prog,
                                   allow_nonempty=a.allow_nonempty, sync=not a.no_sync, workers=a.workers,
                                   processes=a.processes).to_dict()
                import resource

                out["peak_rss_self"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # (+ parts_peak_rss)
            elif a.cmd == "ls":
                from .browse import list_backup

                out = {"entries": [e.to_dict() for e in list_backup(repo, a.id, a.path)]}
            elif a.cmd == "get":
                from ..diskfs import restore_disk_path  # (imports the Dissect parsers: ~0.1 s cold)

                out = restore_disk_path(repo, a.id, a.path, a.target).to_dict()
            elif a.cmd == "verify":
                from .verify import verify_tree

                rep = verify_tree(repo, a.id, progress=prog)
                out = rep.to_dict()
                code = 0 if rep.ok else 3
            elif a.cmd == "show":
                out = repo.read_manifest(a.id)
            elif a.cmd == "list":
                out = {"backups": repo.list_manifests()}
            elif a.cmd == "usage":
                out = {"usage": repo.usage(), "stored_bytes": repo.stored_bytes()}
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
    return code
