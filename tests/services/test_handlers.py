"""Task handlers are registered explicitly, by the worker set-up: importing a service module registers
nothing, and every operation a worker is expected to run (retried ones, ones on a machine's data) has
a handler."""

from __future__ import annotations

from opencbr.services import tasks
from opencbr.services.handlers import register_handlers


def test_every_operation_a_worker_runs_has_a_handler():
    registry = register_handlers(tasks.TaskHandlers())
    assert set(tasks.RESUMABLE) | set(tasks.LOCAL_DATA) | {"vault_delete", "restore_files"} <= set(registry.runs)
    assert set(registry.runs) <= set(tasks.OPERATION_TYPES)
    # what a dead worker leaves in a claimed state is undone for every operation that leaves any
    assert {"backup", "delete", "restore", "create_disk", "create_fs", "vault_delete"} <= set(registry.abandons)


def test_a_registry_is_what_its_set_up_put_in_it():
    assert tasks.TaskHandlers().runs == {}
    one, two = register_handlers(tasks.TaskHandlers()), tasks.TaskHandlers()
    two.register("sync", lambda ctx, run: None)
    assert "sync" not in one.runs and list(two.runs) == ["sync"]
