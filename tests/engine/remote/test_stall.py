"""A task that does not move ends, whatever the agent sends meanwhile (``service._Stall``): the channel's
idle timeout is per read, so an agent that drips a message a byte at a time, or sends progress that says
nothing new, held its task and the worker's thread without end. Legitimately slow tasks go on: progress
that grows (a disk's long run of zero blocks sends nothing else), and a backup under a bandwidth limit
that takes longer than the stall time as a whole."""

from __future__ import annotations

import hashlib
import struct
import threading
import time

import pytest

from opencbr.agentlink.channel import LinkError, channel_pair
from opencbr.engine import Repository
from opencbr.engine.disk.backup import backup_disk
from opencbr.engine.disk.restore import restore_disk
from opencbr.engine.remote import BackupScope, ReadScope, serve_backup, serve_restore, service
from opencbr.engine.remote.client import RemoteChunks

STALL = 1.0


@pytest.fixture
def repo(local_store, monkeypatch):
    monkeypatch.setattr(service, "STALL_TIMEOUT", STALL, raising=False)
    return Repository.create(local_store, "v/", None, encrypted=False)


def _serve(repo, svc, scope=None):
    """serve_backup in a thread: (thread, outcome dict with "final" or "error" and "seconds")."""
    out: dict = {}

    def run():
        t0 = time.monotonic()
        try:
            out["final"] = serve_backup(repo, svc, scope or BackupScope("b1", "disk"))
        except BaseException as e:  # noqa: BLE001
            out["error"] = e
        out["seconds"] = time.monotonic() - t0

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_progress_that_says_nothing_new_ends_the_task(repo):
    svc, agent = channel_pair(timeout=30)  # (a message every 0.2 s: the per-read timeout never fires)
    t, out = _serve(repo, svc)
    try:
        for _ in range(50):  # 10 s of the same progress, at most
            agent.request({"op": "progress", "done": 5, "total": 10}, timeout=5)
            time.sleep(0.2)
    except Exception:  # noqa: BLE001 (the service closed the connection)
        pass
    t.join(10)
    assert isinstance(out.get("error"), LinkError), out
    assert "no further" in str(out["error"])
    assert out["seconds"] < STALL + 2
    assert repo.list_manifests() == []


def test_a_message_dripped_a_byte_at_a_time_ends_the_task(repo):
    svc, agent = channel_pair(timeout=30)
    t, out = _serve(repo, svc)
    head = b'{"op":"known"}'
    frame = struct.pack(">I", len(head)) + head + struct.pack(">Q", 32) + bytes(32)
    try:
        for i in range(100):  # a byte every 0.1 s: the whole message would take 5.8 s, each read 0.1 s
            agent.sock.sendall(frame[i % len(frame):i % len(frame) + 1])
            time.sleep(0.1)
            if not t.is_alive():
                break
    except OSError:
        pass
    t.join(10)
    assert isinstance(out.get("error"), LinkError), out
    assert out["seconds"] < STALL + 2


def _disk(path, size, seed=1):
    import random
    rnd = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for off in range(0, size, 1 << 20):
            f.seek(off)
            f.write(rnd.randbytes(512 << 10))


def _sha(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_progress_that_grows_and_a_slow_backup_go_on(repo, tmp_path):
    """3 s of progress only (growing: a run of zero blocks), then a backup paced at 4 MiB/s that takes
    longer than the stall time as a whole: both are a task that moves; it completes and restores."""
    src = tmp_path / "disk.img"
    _disk(src, 16 << 20)
    svc, agent = channel_pair(timeout=30)
    t, out = _serve(repo, svc, BackupScope("b1", "disk"))
    done = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 3 * STALL:
        done += 1
        agent.request({"op": "progress", "done": done, "total": 1 << 30}, timeout=5)
        time.sleep(0.2)
    agent.limit_bytes_per_second = 4 << 20
    t1 = time.monotonic()
    chunks = RemoteChunks(agent, repo.chunks.keys, max_chunk=repo.chunks.codec.max_chunk)
    backup_disk(chunks, str(src), backup_id="b1", meta={}, block_size=repo.block_size)
    chunks.close()
    agent.send({"ok": True, "result": {}})
    t.join(30)
    assert time.monotonic() - t1 > STALL  # (the pace made the backup itself outlast the stall time)
    assert out.get("final", {}).get("ok"), out
    target = tmp_path / "restored.img"
    svc, agent = channel_pair(timeout=30)
    res: dict = {}
    rt = threading.Thread(target=lambda: res.update(final=serve_restore(repo, svc, ReadScope(("b1",)))))
    rt.start()
    chunks = RemoteChunks(agent, repo.chunks.keys, max_chunk=repo.chunks.codec.max_chunk)
    restore_disk(chunks, "b1", str(target))
    chunks.close()
    agent.send({"ok": True, "result": {}})
    rt.join(30)
    assert res["final"]["ok"] and _sha(target) == _sha(src)
