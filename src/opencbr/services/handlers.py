"""The task handlers of the services, registered explicitly: the worker set-up calls
:func:`register_handlers` with its registry (no module registers anything by being imported)."""

from __future__ import annotations

from opencbr.services import backups, files, hosts, images, migration, replication, resources, restore, vaults
from opencbr.services.restore_tests import OPERATION as RESTORE_TEST
from opencbr.services.restore_tests import abandon_restore_test, run_restore_test
from opencbr.services.tasks import TaskHandlers
from opencbr.services.verification import abandon_verify_task, run_verify_task


def register_handlers(registry: TaskHandlers) -> TaskHandlers:
    """Every operation type a worker runs, with what undoes an abandoned one (its worker died)."""
    registry.register("backup", backups.run_backup, abandon=backups.abandon_task)
    registry.register("delete", backups.run_delete, abandon=backups.abandon_task)
    registry.register("gc", backups.run_gc)
    registry.register("verify", run_verify_task, abandon=abandon_verify_task)  # one backup, or a vault's verify policy
    registry.register("vault_delete", vaults.run_vault_delete, abandon=vaults.abandon_vault_delete)
    registry.register("restore", restore.run_restore, abandon=restore.abandon_restore)
    registry.register("create_disk", restore.run_create_disk, abandon=restore.abandon_restore)
    registry.register("create_fs", files.run_create_fs, abandon=files.abandon_create_fs)
    registry.register("restore_files", files.run_restore_files)
    registry.register("measure", resources.run_measure)
    registry.register("probe", hosts.run_probe)
    registry.register("replication", replication.run_replication, abandon=replication.abandon_replication)
    registry.register("migrate", migration.run_migrate, abandon=migration.abandon_migrate)
    registry.register(images.OPERATION, images.run_create_server, abandon=images.abandon_create_server)
    registry.register(RESTORE_TEST, run_restore_test, abandon=abandon_restore_test)
    return registry
