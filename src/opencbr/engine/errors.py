"""The engine's own exceptions: they say what happened, not how a client is told (no HTTP status, no
CBR code). ``services/engine_errors.py`` holds the one table that maps them to CBR errors, as restic
leaves the meaning of its errors to ``IsNotExist`` and friends."""

from __future__ import annotations


class EngineError(Exception):
    """Base of the engine's own exceptions; ``str()`` is the message, in words."""

    def __reduce__(self):
        # pickles with its attributes (an error raised in a forked restore process reaches the caller)
        return (self.__class__, self.args, self.__dict__)


class Damaged(EngineError):
    """Stored data failed its checks (digest, authentication tag, format). What is damaged, where known:
    ``digest`` (a chunk), ``backup_id`` (a backup's manifest, index or catalog)."""

    def __init__(self, message: str, *, digest: bytes | None = None, backup_id: str | None = None):
        super().__init__(message)
        self.digest = digest
        self.backup_id = backup_id


class Missing(EngineError):
    """An object the engine was asked for is not there: a repository, backup, chunk, pack or path."""


class InvalidArgument(EngineError):
    """A bad request to the engine: a path outside the backup, the wrong kind of backup, a bad id or
    key, a restore target that cannot take the data."""


class Conflict(EngineError):
    """The operation collides with the state of the repository: the backup exists, the lock was lost,
    another garbage collection runs, a file is in the way."""


class OperationCancelled(EngineError):
    """A long engine operation stopped because its ``cancel`` event was set."""


class BackupCancelled(OperationCancelled):
    """A backup stopped on ``cancel``. Nothing was published: no manifest, and the packs the backup
    wrote were deleted (after a crash instead, GC removes them)."""


class RestoreCancelled(OperationCancelled):
    """A restore/export stopped on ``cancel``; the target holds a mix of old and restored blocks."""
