"""A worker receiving an agent's backup keeps its receive buffers and packs in the heap, even when it has
never run a backup of its own (engine/remote/service.py, system/heap.py).

Keeping freed memory (the trim threshold) also stops glibc's adaptive mmap threshold where it is: in a
fresh process that is 128 KiB, and every records message's buffer and every pack was then mapped afresh
and faulted in page by page. The worker in bench/agent.py had run a local backup first, which fixes the
threshold, so the benchmark never showed it; a worker that only serves agents paid ~0.4 CPU s per GB."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from opencbr.engine import Repository
from opencbr.storage import open_store
from opencbr.system.libc import function as libc_function

MASTER = b"h" * 32
CHUNKS = 80
CHUNK = (2 << 20) + (64 << 10)  # two a message: just over 4 MiB, as the agent merges records messages

# The worker's side in a fresh interpreter: nothing in it has fixed the mmap threshold or freed a large
# buffer (which would adapt the threshold), the records are read whole and kept, and the agent's side sends
# them from a thread over a socket pair. Prints the minor page faults serve_backup took.
WORKER = textwrap.dedent("""
    import resource, sys, threading
    from opencbr.agentlink.channel import channel_pair
    from opencbr.engine import Repository
    from opencbr.engine.remote import BackupScope, serve_backup
    from opencbr.storage import open_store

    repo = Repository.open(open_store(sys.argv[1]), "v/", b"h" * 32)
    blob = open(sys.argv[2], "rb").read()
    n = int(sys.argv[3])
    digests = [blob[i * 32:(i + 1) * 32] for i in range(n)]
    at, records = n * 32, []
    while at < len(blob):
        size = int.from_bytes(blob[at:at + 4], "big")
        records.append(blob[at + 4:at + 4 + size])
        at += 4 + size
    svc, agent = channel_pair(timeout=30)

    def agent_side():
        agent.request({"op": "need"}, b"".join(digests))
        for i in range(0, n, 2):
            pair = [(digests[j], records[j]) for j in (i, i + 1)]
            agent.request({"op": "records", "sizes": [len(r) for _, r in pair]},
                          [part for d_r in pair for part in d_r])  # (answered once read)
        agent.request({"op": "commit", "name": "b1", "refs": 32 * n,
                       "header": {"type": "disk", "disk_size": n * 65536, "block_size": 65536}},
                      b"".join(digests))
        agent.send({"ok": True, "result": {}})

    t = threading.Thread(target=agent_side)
    t.start()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    final = serve_backup(repo, svc, BackupScope("b1", "disk"))
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    t.join()
    assert final.get("ok"), final
    print(faults)
""")


@pytest.mark.skipif(libc_function("mallopt") is None, reason="glibc's mallopt is not available")
def test_a_fresh_worker_receives_without_mapping_each_message_afresh(tmp_path):
    import os

    uri = (tmp_path / "store").as_uri()
    repo = Repository.create(open_store(uri), "v/", MASTER, encrypted=True)
    codec = repo.chunks.codec
    blocks = [os.urandom(CHUNK) for _ in range(CHUNKS)]
    digests = [codec.digest(b) for b in blocks]
    blob = tmp_path / "records"
    with open(blob, "wb") as f:
        f.write(b"".join(digests))
        for d, b in zip(digests, blocks, strict=True):
            rec = codec.encode(d, b)
            f.write(len(rec).to_bytes(4, "big") + rec)
    done = subprocess.run([sys.executable, "-c", WORKER, uri, str(blob), str(CHUNKS)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    faults = int(done.stdout.split()[-1])
    received_pages = CHUNKS * CHUNK // 4096
    # each message's buffer mapped afresh: a page fault per page received and more (~55k); kept in the
    # heap, only the first few buffers' pages are faulted in (14-23k, most of them the service's own
    # buffers made once)
    assert faults < received_pages, (faults, received_pages)
