"""A child process for the crash and concurrency tests (run with ``python engine_child.py ...`` in
``tests.support.engine.child_env()``).

    backup STORE_URL PREFIX IMAGE BACKUP_ID     prints "progress <done> <total>" lines, then "done"
    gc STORE_URL PREFIX [DELAY]                 GC over a store that sleeps DELAY s per write/delete
                                                (so a SIGKILL lands in the middle), prints "gc-start"
    worker STORE_URL PREFIX WORKDIR SEED N DEADLINE   up to N random operations until time.time() >=
                                                DEADLINE (see test_concurrency.py), one JSON line per
                                                finished operation on stdout
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

from opencbr.engine import Repository
from opencbr.engine.errors import Conflict, EngineError
from opencbr.storage import LocalStore, open_store
from tests.support.engine import FAST_LOCKS, MASTER_KEY, PacedStore, make_image, sha256_file


class SlowLocalStore(LocalStore):
    """A real LocalStore whose writes and deletes take a little longer, to widen crash windows."""

    def __init__(self, root, delay):
        super().__init__(root)
        self.delay = delay

    def put(self, key, data, *, sync=True):
        time.sleep(self.delay)
        super().put(key, data, sync=sync)

    def delete(self, key):
        time.sleep(self.delay)
        super().delete(key)


def say(*parts) -> None:
    print(*parts, flush=True)


def main() -> None:
    cmd, url, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
    if cmd == "gc" and len(sys.argv) > 4:
        store = SlowLocalStore(url[len("file://"):], float(sys.argv[4]))
    elif cmd == "worker":
        store = PacedStore(open_store(url))
    else:
        store = open_store(url)
    repo = Repository.open(store, prefix, MASTER_KEY, lock_timing=FAST_LOCKS)
    if cmd == "backup":
        img, bid = sys.argv[4], sys.argv[5]
        repo.backup_disk(img, backup_id=bid, meta={"child": os.getpid()},
                         progress=lambda d, t: say("progress", d, t))
        say("done")
    elif cmd == "gc":
        say("gc-start")
        res = repo.gc()
        say("gc-done", json.dumps(res.to_dict()))
    elif cmd == "worker":
        run_worker(repo, Path(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]))


POOL = 400  # blocks shared by all images: chunks are reused across backups, yet few backups hold each


def run_worker(repo: Repository, workdir: Path, seed: int, n: int, deadline: float = float("inf"), *,
               say=say) -> None:
    """Random backups (images drawn from a shared block pool, so chunks are shared across backups and
    with deleted backups), deletes of this worker's own backups, and GCs; one JSON line per finished
    operation goes to ``say`` (stdout in a child process)."""
    r = random.Random(seed)
    mine: list[str] = []
    for i in range(n):
        if time.time() >= deadline:
            break
        x = r.random()
        try:
            if x < 0.5 or not mine:
                bid = f"s{seed}-{i}"
                img = make_image(workdir / f"{bid}.img", r.randint(64, 640), seed=r.randrange(10**6),
                                 pool=POOL, zero_frac=0.2)
                digest = sha256_file(img)
                repo.backup_disk(img, backup_id=bid, meta={"sha256": digest})
                os.unlink(img)
                mine.append(bid)
                say(json.dumps({"op": "backup", "id": bid, "sha256": digest}))
            elif x < 0.75:
                bid = mine.pop(r.randrange(len(mine)))
                repo.delete_backup(bid)
                say(json.dumps({"op": "delete", "id": bid}))
            else:
                res = repo.gc()
                say(json.dumps({"op": "gc", "deleted": res.packs_deleted, "pending": res.packs_condemned_pending, "orphans": res.orphan_packs, "live": 0}))
        except Conflict as e:  # another GC is running: fine
            say(json.dumps({"op": "conflict", "msg": str(e)}))
        except EngineError as e:
            say(json.dumps({"op": "error", "msg": str(e)}))
            raise


if __name__ == "__main__":
    main()
