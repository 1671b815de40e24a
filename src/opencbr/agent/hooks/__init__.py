"""Application-consistency hooks (docs/app-consistent.md): PostgreSQL base-backup mode, MariaDB/MySQL
global read lock and custom scripts, held around a host's consistency point by :class:`Quiesce`.
Needs only the standard library and the databases' own command-line clients."""

from .outcome import HookError, HookOutcome
from .plan import DEFAULT_SCRIPT_DIR, HookPlan, MysqlTarget, PostgresTarget, discover
from .postgres import prepare_restored_postgres, prepare_restored_tree
from .quiesce import APP_CONSISTENT, CRASH_CONSISTENT, Quiesce, check
from .restored_disk import prepare_restored_disk

__all__ = ["APP_CONSISTENT", "CRASH_CONSISTENT", "DEFAULT_SCRIPT_DIR", "HookError", "HookOutcome", "HookPlan",
           "MysqlTarget", "PostgresTarget", "Quiesce", "check", "discover", "prepare_restored_postgres",
           "prepare_restored_tree", "prepare_restored_disk"]
