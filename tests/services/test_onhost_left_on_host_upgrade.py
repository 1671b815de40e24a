"""A new file system at a path a failed one left on an agent's host (its agent killed mid-restore) first
asks the agent to remove what that task made there (services/onhost.py, ``_clear_left_on_host``). A
failure recorded by a service of release ff1b3ed or before names no ``agent_id`` in its
``left_on_host``: after that service was upgraded in place, the directory was never asked about, and
every restore to the path failed "exists and is not empty" (found in an upgrade trial)."""

from __future__ import annotations

from types import SimpleNamespace

from opencbr.catalog.models import Task
from opencbr.services import onhost

PATH = "/srv/copy"


class _Provider:
    def __init__(self):
        self.asked: list[tuple[str, str]] = []

    def remove_made(self, connect, *, project_id: str, path: str, made_by: str) -> dict:
        self.asked.append((path, made_by))
        return {"removed": 3}


def _failed(ctx, task_id: str, left: dict) -> None:
    with ctx.tx() as s:
        s.add(Task(id=task_id, project_id="p1", operation_type="create_fs", status="failed",
                   created_at=ctx.now(), extra_info={"left_on_host": left}))


def _run(ctx, provider, agent_id="agent-1"):
    run = SimpleNamespace(task_id="new-task", project_id="p1")
    link = SimpleNamespace(agent_id=agent_id, project_id="p1", connect=object())
    onhost._clear_left_on_host(ctx, run, provider, link, PATH)


def test_a_left_directory_recorded_before_the_upgrade_is_asked_about(ctx):
    _failed(ctx, "old-task", {"path": PATH, "reason": "agent h1 is offline"})  # (no agent_id: old service)
    provider = _Provider()
    _run(ctx, provider)
    assert provider.asked == [(PATH, "old-task")]
    with ctx.read() as s:
        assert s.get(Task, "old-task").extra_info["left_on_host"]["removed_by"] == "new-task"


def test_one_left_on_another_agent_is_still_not_asked_about(ctx):
    _failed(ctx, "other", {"path": PATH, "agent_id": "agent-2", "reason": "offline"})
    _failed(ctx, "done", {"path": PATH, "agent_id": "agent-1", "reason": "offline", "removed_by": "x"})
    provider = _Provider()
    _run(ctx, provider)
    assert provider.asked == []
