"""Engine-specific exceptions (the rest come from :mod:`opencbr.domain.errors`)."""

from __future__ import annotations

from ..domain.errors import CBRError


class OperationCancelled(CBRError):
    """A long engine operation stopped because its ``cancel`` event was set."""

    status = 409
    code = "BackupService.6011"


class BackupCancelled(OperationCancelled):
    """A backup stopped on ``cancel``. Nothing was published: no manifest, and the packs the backup
    wrote were deleted (after a crash instead, GC removes them)."""


class RestoreCancelled(OperationCancelled):
    """A restore/export stopped on ``cancel``; the target holds a mix of old and restored blocks."""
