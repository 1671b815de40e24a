"""`--wait` notices the end of a task soon after it: looks often at first, then every half second."""

from __future__ import annotations

from opencbr.cli.waiting import next_look


def test_short_tasks_are_looked_at_often_long_ones_twice_a_second():
    assert next_look(0.0) == 0.02
    assert next_look(0.5) == 0.05  # an unchanged backup: noticed within ~50 ms of its end
    assert next_look(3.0) == 0.3
    assert next_look(60.0) == 0.5
    assert next_look(60.0, longest=2.0) == 2.0
    looks, waited = 0, 0.0
    while waited < 1.0:  # the first second costs a bounded number of requests
        waited += next_look(waited)
        looks += 1
    assert 15 <= looks <= 30


def test_near_its_end_by_its_pace_a_task_is_looked_at_sooner():
    from opencbr.cli.waiting import Pace

    pace = Pace()
    assert pace.left(100.0, 10) is None  # first look: no pace yet
    assert pace.left(104.0, 10) is None  # no progress since: none either
    left = pace.left(105.0, 90)  # 80 points in 5 s: 10 points need ~0.6 s
    assert abs(left - 0.625) < 1e-9
    assert next_look(5.0, left=left) == 0.15625  # instead of 0.5
    assert next_look(5.0, left=0.01) == 0.05  # never closer together than 50 ms
    assert next_look(5.0, left=60.0) == 0.5  # far from its end: as before
    assert next_look(0.1, left=60.0) == 0.02


def test_a_task_whose_progress_stands_still_is_not_looked_at_more_often():
    from opencbr.cli.waiting import Pace

    pace = Pace()
    assert pace.left(0.0, 99) is None
    assert all(pace.left(t, 99) is None for t in (1.0, 5.0, 30.0))
    assert pace.left(31.0, 100) is None  # (done: its status says so)


def test_the_end_of_a_first_backup_is_noticed_within_a_tenth_of_a_second(monkeypatch):
    """A task of 6.2 s reporting its progress once a second, as a worker does: `--wait` sees its end
    within 0.1 s (it looked every 0.5 s by then: 0.38 s late here), with a request or two more."""
    from opencbr.cli import waiting

    now = [0.0]
    monkeypatch.setattr(waiting.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(waiting.time, "sleep", lambda s: now.__setitem__(0, now[0] + s))
    end, looks = 6.23, []

    class Client:  # a service before `?wait=`: it answers at once
        def get(self, _path, **_params):
            looks.append(now[0])
            t = now[0]
            status = "success" if t >= end else "running"
            progress = 100 if t >= end else min(99, int(int(t) / 6.0 * 99))  # reported each whole second
            return {"operation_log": {"id": "t1", "status": status, "extra_info": {"common": {"progress": progress}}}}

    logs = waiting.wait_for(Client(), ["t1"], quiet=True)
    assert logs[0]["status"] == "success"
    assert looks[-1] - end <= 0.1
    assert len(looks) <= 52  # (48 before: the first second is most of them)


def test_the_last_task_followed_is_held_by_the_service_until_its_end(monkeypatch):
    """The service answers `?wait=` when the task ends (or after the wait): the end of a task of 6.23 s is
    seen when it comes, with one request a second, no sleeping in between."""
    from opencbr.cli import waiting

    now = [0.0]
    monkeypatch.setattr(waiting.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(waiting.time, "sleep", lambda s: now.__setitem__(0, now[0] + s))
    end, looks = 6.23, []

    class Client:
        def get(self, _path, wait=None):
            looks.append((now[0], wait))
            now[0] = min(end, now[0] + float(wait)) if wait and now[0] < end else now[0]
            status = "success" if now[0] >= end else "running"
            return {"operation_log": {"id": "t1", "status": status, "extra_info": {"common": {"progress": 0}}}}

    logs = waiting.wait_for(Client(), ["t1"], quiet=True)
    assert logs[0]["status"] == "success"
    assert now[0] == end  # not a moment later
    assert [w for _, w in looks] == ["1"] * 7 and len(looks) == 7


def test_several_tasks_are_looked_at_in_turn_without_holding(monkeypatch):
    from opencbr.cli import waiting

    now = [0.0]
    monkeypatch.setattr(waiting.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(waiting.time, "sleep", lambda s: now.__setitem__(0, now[0] + s))
    ends, asked = {"a": 0.5, "b": 2.0}, []

    class Client:
        def get(self, path, wait=None):
            tid = path.rsplit("/", 1)[1]
            asked.append((tid, wait))
            if wait:
                now[0] = min(ends[tid], now[0] + float(wait))
            status = "success" if now[0] >= ends[tid] else "running"
            return {"operation_log": {"id": tid, "status": status, "extra_info": {}}}

    waiting.wait_for(Client(), ["a", "b"], quiet=True)
    first_b_held = next(i for i, (tid, w) in enumerate(asked) if w)
    assert all(w is None for _, w in asked[:first_b_held])  # both followed: plain looks
    assert all(tid == "b" for tid, _ in asked[first_b_held:])  # a ended: b alone, held
    assert now[0] == 2.0


def test_following_with_bars_runs_no_refresh_thread(monkeypatch):
    """A Ctrl-C can land while the main thread holds the bars' lock; with a refresh thread waiting for
    that lock, leaving the bars would join it forever (a `--wait` that hung at Ctrl-C). The only thread
    beside the main one is the daemon that imports rich meanwhile, which takes no lock of rich's."""
    import threading

    from opencbr.cli import waiting

    monkeypatch.setattr(waiting.time, "sleep", lambda s: None)
    threads: list[set[str]] = []
    main = threading.current_thread().name

    class Client:
        def get(self, _path, **_params):
            threads.append({t.name for t in threading.enumerate()})
            status = "success" if len(threads) >= 3 else "running"
            return {"operation_log": {"id": "t1", "status": status, "operation_type": "backup",
                                      "extra_info": {"common": {"progress": 40 * len(threads)}}}}

    before = {t.name for t in threading.enumerate()}
    (log,) = waiting.wait_for(Client(), ["t1"])
    assert log["status"] == "success" and len(threads) == 3
    assert all(names - before <= {"cbr-load-rich"} for names in threads)
    assert main in before


def test_rich_is_imported_while_the_first_look_waits_on_the_service():
    """The bars' and the table's imports (~50 ms of a cold start) run while the service holds the first
    look, not after it: checked in a fresh interpreter, where nothing imported rich before."""
    import subprocess
    import sys

    script = """
import sys, time
from opencbr.cli import waiting
assert "rich" not in sys.modules
seen = []
class Client:
    def get(self, _path, **_params):
        deadline = time.monotonic() + 10  # (the service holding the look until the task ends)
        while "rich.table" not in sys.modules and time.monotonic() < deadline:
            time.sleep(0.005)
        seen.append("rich.table" in sys.modules)
        return {"operation_log": {"id": "t1", "status": "success", "operation_type": "backup",
                                  "extra_info": {"common": {"progress": 100}}}}
waiting.wait_for(Client(), ["t1"])
print(seen)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[True]"
