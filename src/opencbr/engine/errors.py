"""The engine's own exceptions: they say what happened, not how a client is told (no HTTP status, no
CBR code). ``services/engine_errors.py`` holds the one table that maps them to CBR errors. Damage,
missing objects, bad arguments and conflicts are raised as the domain's errors
(:mod:`opencbr.domain.errors`)."""

from __future__ import annotations


class EngineError(Exception):
    """Base of the engine's own exceptions."""


class OperationCancelled(EngineError):
    """A long engine operation stopped because its ``cancel`` event was set."""


class BackupCancelled(OperationCancelled):
    """A backup stopped on ``cancel``. Nothing was published: no manifest, and the packs the backup
    wrote were deleted (after a crash instead, GC removes them)."""


class RestoreCancelled(OperationCancelled):
    """A restore/export stopped on ``cancel``; the target holds a mix of old and restored blocks."""
