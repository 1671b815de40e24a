"""Custom pre-freeze / post-thaw scripts: order, output, timeouts, the ownership and mode rules, and
the guardian that runs post-thaw when the agent dies or holds too long."""

from __future__ import annotations

import os
import time

import pytest

from opencbr.agent.hooks import APP_CONSISTENT, CRASH_CONSISTENT, Quiesce, check, discover

from .holder import Holder

pytestmark = pytest.mark.timeout(60)


def _script(root, phase: str, name: str, body: str, mode: int = 0o755) -> str:
    folder = root / f"{phase}.d"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    os.chmod(path, mode)
    return str(path)


@pytest.fixture
def hooks(tmp_path):
    root = tmp_path / "hooks"
    root.mkdir()
    os.chmod(root, 0o755)
    journal = tmp_path / "journal"
    _script(root, "pre-freeze", "10-first", f'echo "pre 10 $OPENCBR_HOOK_PHASE $OPENCBR_BACKUP_LABEL" >> {journal}; echo said-10')
    _script(root, "pre-freeze", "20-second", f'echo "pre 20" >> {journal}')
    _script(root, "post-thaw", "10-thaw", f'echo "post 10 $OPENCBR_HOOK_PHASE" >> {journal}; echo thawed >&2')
    return root, journal


def _plan(root):
    return discover({"discover": False, "script_dir": str(root)})


def _lines(journal) -> list[str]:
    return journal.read_text().splitlines() if journal.exists() else []


def test_scripts_run_in_order_around_the_snapshot(hooks):
    root, journal = hooks
    (root / "pre-freeze.d" / "README.sample").write_text("ignored: not a run-parts name")
    with Quiesce(_plan(root), timeout=5, label="backup-42") as q:
        assert _lines(journal) == ["pre 10 pre-freeze backup-42", "pre 20"]
    assert _lines(journal)[-1] == "post 10 post-thaw"
    assert q.achieved == APP_CONSISTENT, q.reason
    by_name = {o.name: o for o in q.outcomes}
    assert by_name["pre-freeze.d/10-first"].output == "said-10\n"
    assert by_name["post-thaw.d/10-thaw"].ok and by_name["post-thaw.d/10-thaw"].output == "thawed\n"
    (result,) = [r for r in check(_plan(root)) if r["kind"] != "note"]
    assert result["ok"] and result["scripts"] == {"pre-freeze": ["10-first", "20-second"], "post-thaw": ["10-thaw"]}
    assert result["ignored"] == ["pre-freeze.d/README.sample"]


def test_a_script_past_its_timeout_is_killed_and_post_thaw_still_runs(hooks):
    root, journal = hooks
    _script(root, "pre-freeze", "15-hangs", "echo hanging; sleep 60")
    started = time.monotonic()
    with Quiesce(_plan(root), timeout=1) as q:
        assert q.achieved == CRASH_CONSISTENT
        assert _lines(journal)[-1] == "post 10 post-thaw"  # released at once, before the snapshot
    assert time.monotonic() - started < 30  # the script hangs for 60 s; slack for a loaded machine
    assert "pre-freeze.d/15-hangs: timed out after 1 s" in q.reason, q.reason
    assert "pre 20" not in _lines(journal)
    hung = [o for o in q.outcomes if o.name == "pre-freeze.d/15-hangs"][0]
    assert hung.output == "hanging\n"


@pytest.mark.parametrize("breach, reason", [
    ("group-writable", "writable by group or others"),
    ("other-owner", "not root or the agent's user"),
    ("symlink", "symbolic link"),
    ("not-executable", "not executable"),
])
def test_an_untrusted_script_refuses_the_phase_before_anything_runs(hooks, breach, reason):
    root, journal = hooks
    path = _script(root, "post-thaw", "20-bad", "echo bad", 0o775 if breach == "group-writable" else 0o755)
    if breach == "other-owner":
        os.chown(path, 65534, 65534)
    elif breach == "symlink":
        os.unlink(path)
        os.symlink("/bin/true", path)
    elif breach == "not-executable":
        os.chmod(path, 0o644)
    with Quiesce(_plan(root), timeout=5) as q:
        pass
    assert q.achieved == CRASH_CONSISTENT and reason in q.reason, q.reason
    assert _lines(journal) == []
    (result,) = [r for r in check(_plan(root)) if r["kind"] != "note"]
    assert not result["ok"] and reason in result["message"]


def test_an_untrusted_directory_is_refused(hooks):
    root, journal = hooks
    os.chmod(root / "pre-freeze.d", 0o777)
    with Quiesce(_plan(root), timeout=5) as q:
        pass
    assert q.achieved == CRASH_CONSISTENT and "pre-freeze.d is writable by group or others" in q.reason, q.reason


def _wait_for(journal, line: str, seconds: float) -> float:
    started = time.monotonic()
    while not any(line in x for x in _lines(journal)):
        assert time.monotonic() - started < seconds, _lines(journal)
        time.sleep(0.05)
    return time.monotonic() - started


def test_the_guardian_runs_post_thaw_when_the_holder_is_killed(hooks):
    root, journal = hooks
    with Holder({"discover": False, "script_dir": str(root)}, timeout=5, hold=60) as holder:
        assert holder.state["achieved"] == APP_CONSISTENT
        assert _lines(journal) == ["pre 10 pre-freeze opencbr", "pre 20"]
        holder.kill()
        assert _wait_for(journal, "post 10 post-thaw", 5) < 5


def test_the_guardian_runs_post_thaw_at_the_hold_timeout(hooks):
    root, journal = hooks
    with Quiesce(_plan(root), timeout=5, hold_timeout=1) as q:
        _wait_for(journal, "post 10 post-thaw", 5)
    assert q.achieved == CRASH_CONSISTENT and "hold timeout" in q.reason
    thawed = [o for o in q.outcomes if o.name == "post-thaw.d/10-thaw"]
    assert len(thawed) == 1 and "run by the guardian: hold timeout" in thawed[0].message
    assert _lines(journal).count("post 10 post-thaw") == 1
