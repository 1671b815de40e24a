"""``GET /operation-logs/{id}?wait=`` (extension): the answer comes when the task has finished, or after
``wait`` seconds; bad values are refused with the CBR error body."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from opencbr.api.routes import tasks as task_routes
from opencbr.domain.errors import InvalidParameter
from tests.support.clients import api, signed, task_ok


def _states(monkeypatch, *statuses: str) -> list[float]:
    """The task's status at each read of the catalog, in turn (the last one from then on); the times read."""
    reads: list[float] = []

    def show(_ctx, _p, _tid):
        reads.append(time.monotonic())
        status = statuses[min(len(reads), len(statuses)) - 1]
        return status, {"operation_log": {"id": "t1", "status": status}}

    monkeypatch.setattr(task_routes, "_show_op_log", show)
    return reads


def _answer(wait):
    resp = asyncio.run(task_routes.show_op_log("t1", wait=wait, p=None, ctx=None))
    return json.loads(resp.body)["operation_log"]["status"]


def test_a_wait_answers_when_the_task_ends(monkeypatch):
    reads = _states(monkeypatch, "waiting", "running", "running", "success")
    t0 = time.monotonic()
    assert _answer(5.0) == "success"
    assert len(reads) == 4 and time.monotonic() - t0 < 2.0  # looked every 50 ms, not for 5 s


def test_without_wait_the_state_is_answered_at_once(monkeypatch):
    reads = _states(monkeypatch, "running", "success")
    assert _answer(None) == "running" and len(reads) == 1


def test_a_wait_ends_with_the_state_at_its_end(monkeypatch):
    reads = _states(monkeypatch, "running")
    t0 = time.monotonic()
    assert _answer(0.2) == "running"
    assert 0.15 <= time.monotonic() - t0 < 4.0 and len(reads) >= 3


@pytest.mark.parametrize("wait", [-1.0, 10.5, float("nan"), float("inf")])
def test_a_wait_out_of_bounds_is_refused(wait):
    with pytest.raises(InvalidParameter, match="wait must be between 0 and 10 seconds"):
        _answer(wait)


def test_the_service_answers_a_waited_look_and_refuses_bad_waits(server, tmp_path):
    c = api(server)
    img = tmp_path / "disk.img"
    img.write_bytes(b"wait" * 50_000)
    disk = c.post("/inventory/disks", {"name": f"oplog-wait-{server.backend}", "path": str(img)})["disk"]
    vault = c.post("/vaults", {"vault": {"name": f"oplog-wait-{server.backend}", "billing": {
        "object_type": "disk", "size": 10}, "resources": [{"id": disk["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": vault["id"]}})["checkpoint"]
    task_id = c.get(f"/backups/{cp['vault']['resources'][0]['backup_id']}")["backup"]["task_id"]
    log = c.get(f"/operation-logs/{task_id}", wait=10)["operation_log"]
    assert log["status"] == "success", log
    assert log == task_ok(c, task_id)  # the same answer as without wait
    for bad in ("abc", "11", "-1", "nan"):
        r = signed(c, "GET", f"/operation-logs/{task_id}", params={"wait": bad})
        assert r.status_code == 400, (bad, r.status_code, r.text[:300])
        assert set(r.json()) == {"error_code", "error_msg"} and "wait" in r.json()["error_msg"]


def test_past_the_held_waits_a_wait_is_answered_at_once(monkeypatch):
    """Many held looks at once cannot take the catalog's connections: past MAX_HELD_WAITS, no holding."""
    reads = _states(monkeypatch, "running")
    monkeypatch.setattr(task_routes, "MAX_HELD_WAITS", 2)

    async def many():
        t0 = time.monotonic()
        held = [asyncio.create_task(task_routes.show_op_log("t1", wait=2.0, p=None, ctx=None)) for _ in range(2)]
        await asyncio.sleep(0.1)  # both are holding now
        await task_routes.show_op_log("t1", wait=5.0, p=None, ctx=None)
        at_once = time.monotonic() - t0
        await asyncio.gather(*held)
        return at_once

    assert asyncio.run(many()) < 1.5  # (held, it would take 5 s)
    assert task_routes._held == 0 and len(reads) >= 3


def test_a_held_answer_is_woken_by_the_end_of_a_task_not_by_its_next_look(monkeypatch, tmp_path):
    """A task's end rings the bell the held answers wait on (api/task_ends.py): the answer comes at once,
    although its next look is seconds away."""
    from types import SimpleNamespace

    from opencbr.api import task_ends
    from opencbr.services import doorbell

    monkeypatch.setattr(task_ends, "LOOK_SECONDS", 30.0)
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    ctx = SimpleNamespace(settings=SimpleNamespace(effective_catalog_url=url))
    state = {"status": "running"}
    reads: list[float] = []

    def show(_ctx, _p, _tid):
        reads.append(time.monotonic())
        return state["status"], {"operation_log": {"id": "t1", "status": state["status"]}}

    monkeypatch.setattr(task_routes, "_show_op_log", show)

    async def held() -> tuple[str, float]:
        answer = asyncio.create_task(task_routes.show_op_log("t1", wait=10.0, p=None, ctx=ctx))
        for _ in range(100):  # until the listener hears (its thread has started and bound its socket)
            await asyncio.sleep(0.05)
            if task_ends.task_ends(url).listening and reads:
                break
        assert task_ends.task_ends(url).listening
        state["status"] = "success"
        t0 = time.monotonic()
        doorbell.ring(doorbell.doorbell_dir(url, doorbell.TASK_ENDS))
        resp = await answer
        return json.loads(resp.body)["operation_log"]["status"], time.monotonic() - t0

    status, took = asyncio.run(held())
    assert status == "success" and took < 2.0  # (without the ring: 30 s, past the wait's 10)
    assert len(reads) == 2
