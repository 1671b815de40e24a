"""``python -m opencbr.engine``: the engine on its own, without a catalog or an API, for operators who
debug a repository and for the benchmarks (bench/disk.py, bench/tree.py).

    python -m opencbr.engine --store URL [--prefix P] [--key-file F | --key-hex H] [--progress] COMMAND

Either kind of backup (the repository)::

    init [--no-encrypt] [--block-size N] [--pack-size N]
    list | show ID | delete ID | usage | gc
    ls ID [PATH]                  tree backups, and disk backups holding ext4/FAT file systems

Disk images (fixed indexes)::

    disk backup DISK --id ID [--parent ID] [--full] [--meta JSON]
    disk restore ID TARGET [--no-truncate]
    disk verify ID | disk export ID OUT
    disk get ID PATH TARGET       one file or directory out of a disk backup

Trees of files (dynamic indexes)::

    tree backup DIR --id ID [--parent ID] [--full] [--meta JSON] [--workers N] [--chunks AVG,MIN,MAX]
                [--zstd-level N]
    tree restore ID TARGET [--path P] [--allow-nonempty] [--no-sync] [--workers N] [--processes N]
    tree verify ID

The master key (32 bytes, hex) comes from ``--key-file`` (a file holding the hex), ``--key-hex`` or
``$OPENCBR_MASTER_KEY``. Results are JSON on stdout; errors a JSON body on stderr naming what happened in
the engine's terms (``{"error": "Missing", "error_msg": ...}``, see engine/errors.py; exit 1); a verify that
finds damage exits 3. ``--progress`` prints progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable

from ..storage import open_store
from . import Repository
from .chunks.manifests import check_name
from .errors import EngineError, Missing

#: Exit code of a verify that found damaged or missing data.
EXIT_DAMAGED = 3

Progress = Callable[[int, int], None]


def main(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    store = open_store(a.store)
    prog = _progress(a.progress)
    try:
        key = _master_key(a)
        if a.command == "init":
            out = _init(a, store, key)
        else:
            out = a.run(a, Repository.open(store, a.prefix, key), prog)
    except EngineError as e:
        if prog:
            print(file=sys.stderr)
        print(json.dumps({"error": type(e).__name__, "error_msg": str(e)}), file=sys.stderr)
        return 1
    finally:
        store.close()
    if prog:
        print(file=sys.stderr)
    print(json.dumps(out, indent=1, default=str))
    return EXIT_DAMAGED if a.verdict and not out["ok"] else 0


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m opencbr.engine", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True, help="file:///abs/path or s3://bucket/prefix?endpoint_url=...")
    ap.add_argument("--prefix", default="", help="repository prefix inside the store (e.g. vaults/<id>)")
    ap.add_argument("--key-file")
    ap.add_argument("--key-hex")
    ap.add_argument("--progress", action="store_true")
    commands = ap.add_subparsers(dest="command", required=True)
    p = _command(commands, "init", None)
    p.add_argument("--no-encrypt", action="store_true")
    p.add_argument("--block-size", type=int, default=None)
    p.add_argument("--pack-size", type=int, default=None)
    _command(commands, "list", _list)
    _command(commands, "usage", _usage)
    _command(commands, "gc", _gc)
    for name, run in (("show", _show), ("delete", _delete)):
        _command(commands, name, run).add_argument("id")
    p = _command(commands, "ls", _ls)
    p.add_argument("id")
    p.add_argument("path", nargs="?", default="/")
    _disk_commands(commands.add_parser("disk", help="disk images").add_subparsers(dest="disk_command",
                                                                                  required=True))
    _tree_commands(commands.add_parser("tree", help="trees of files").add_subparsers(dest="tree_command",
                                                                                     required=True))
    return ap


def _command(commands, name: str, run, *, verdict: bool = False) -> argparse.ArgumentParser:
    """A command; ``verdict``: its result's ``ok`` decides the exit code."""
    p = commands.add_parser(name)
    p.set_defaults(run=run, verdict=verdict)
    return p


def _disk_commands(commands) -> None:
    p = _command(commands, "backup", _disk_backup)
    p.add_argument("disk")
    _backup_options(p)
    p = _command(commands, "restore", _disk_restore)
    p.add_argument("id")
    p.add_argument("target")
    p.add_argument("--no-truncate", action="store_true")
    _command(commands, "verify", _disk_verify, verdict=True).add_argument("id")
    p = _command(commands, "export", _disk_export)
    p.add_argument("id")
    p.add_argument("out")
    p = _command(commands, "get", _disk_get)
    p.add_argument("id")
    p.add_argument("path")
    p.add_argument("target")


def _tree_commands(commands) -> None:
    p = _command(commands, "backup", _tree_backup)
    p.add_argument("dir")
    _backup_options(p)
    p.add_argument("--workers", type=int)
    p.add_argument("--chunks", help="FastCDC avg,min,max in KiB (default: the engine's, see chunker.py)")
    p.add_argument("--zstd-level", type=int)
    p = _command(commands, "restore", _tree_restore)
    p.add_argument("id")
    p.add_argument("target")
    p.add_argument("--path")
    p.add_argument("--allow-nonempty", action="store_true")
    p.add_argument("--no-sync", action="store_true")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--processes", type=int, help="processes for a big restore (default: CPUs, at most 2)")
    _command(commands, "verify", _tree_verify, verdict=True).add_argument("id")


def _backup_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--id", required=True)
    p.add_argument("--parent")
    p.add_argument("--full", action="store_true")
    p.add_argument("--meta", default="{}")


def _master_key(a: argparse.Namespace) -> bytes | None:
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


def _progress(enabled: bool) -> Progress | None:
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


# ------------------------------------------------------------------------------------ the repository
def _init(a, store, key: bytes | None) -> dict:
    sizes = {k: v for k, v in (("block_size", a.block_size), ("pack_size", a.pack_size)) if v}
    repo = Repository.create(store, a.prefix, key, encrypted=not a.no_encrypt, **sizes)
    return {"id": repo.id, "encrypted": repo.encrypted, "block_size": repo.block_size}


def _list(a, repo: Repository, prog) -> dict:
    return {"backups": repo.list_manifests()}


def _show(a, repo: Repository, prog) -> dict:
    return repo.read_manifest(a.id)


def _delete(a, repo: Repository, prog) -> dict:
    repo.delete_backup(a.id)
    return {"deleted": a.id}


def _usage(a, repo: Repository, prog) -> dict:
    return {"usage": repo.usage(), "stored_bytes": repo.stored_bytes()}


def _gc(a, repo: Repository, prog) -> dict:
    return repo.gc(progress=prog).to_dict()


def _ls(a, repo: Repository, prog) -> dict:
    from .tree import list_backup

    return {"entries": [e.to_dict() for e in list_backup(repo, a.id, a.path)]}


def _named_parent(a, repo: Repository) -> str | None:
    """``--parent``, which must name a backup of the repository: the engine reads a missing parent as one
    deleted meanwhile (the service's retention may do that) and backs everything up again, which a
    mistyped id on this command line should not do without a word."""
    if a.parent is not None and not repo.chunks.has_manifest(check_name(a.parent)):
        raise Missing(f"--parent {a.parent}: no such backup in the repository")
    return a.parent


# ------------------------------------------------------------------------------------ disk images
def _disk_backup(a, repo: Repository, prog) -> dict:
    return repo.backup_disk(a.disk, backup_id=a.id, meta=json.loads(a.meta), parent_backup_id=_named_parent(a, repo),
                            full=a.full, progress=prog).to_dict()


def _disk_restore(a, repo: Repository, prog) -> dict:
    return repo.restore_disk(a.id, a.target, progress=prog, truncate=not a.no_truncate).to_dict()


def _disk_verify(a, repo: Repository, prog) -> dict:
    return repo.verify(a.id, progress=prog).to_dict()


def _disk_export(a, repo: Repository, prog) -> dict:
    return repo.export_disk(a.id, a.out, progress=prog).to_dict()


def _disk_get(a, repo: Repository, prog) -> dict:
    from .diskfs import restore_disk_path  # (imports the Dissect parsers: ~0.1 s cold)

    return restore_disk_path(repo, a.id, a.path, a.target).to_dict()


# ------------------------------------------------------------------------------------ trees
# Each command imports only what it runs: start-up is part of a re-backup's time in the benchmark.
def _tree_backup(a, repo: Repository, prog) -> dict:
    from .tree import ChunkParams, backup_tree

    tuning = {}
    if a.chunks:
        avg, low, high = (int(x) << 10 for x in a.chunks.split(","))
        tuning["params"] = ChunkParams(avg, low, high)
    if a.zstd_level is not None:
        tuning["level"] = a.zstd_level
    return backup_tree(repo, a.dir, backup_id=a.id, meta=json.loads(a.meta), parent_backup_id=_named_parent(a, repo),
                       full=a.full, progress=prog, workers=a.workers, **tuning).to_dict()


def _tree_restore(a, repo: Repository, prog) -> dict:
    import resource

    from .tree import restore_tree

    out = restore_tree(repo, a.id, a.target, subpath=a.path, progress=prog, allow_nonempty=a.allow_nonempty,
                       sync=not a.no_sync, workers=a.workers, processes=a.processes).to_dict()
    out["peak_rss_self"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # (+ parts_peak_rss)
    return out


def _tree_verify(a, repo: Repository, prog) -> dict:
    from .tree import verify_tree

    return verify_tree(repo, a.id, progress=prog).to_dict()
