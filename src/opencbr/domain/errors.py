"""Errors of the domain, one type per kind of rule, each carrying the CBR error body.

Every error raised below `api/` is a :class:`CBRError`. The API maps it to an HTTP response with the CBR
error body ``{"error_code": ..., "error_msg": ...}``; the CLI prints the same message and exits non-zero.
Codes follow the public service's convention: ``BackupService.<4 digits>`` for service rules,
``APIGW.<4 digits>`` for authentication and routing (docs/api.md).
"""

from __future__ import annotations


class CBRError(Exception):
    """Base of every error a client may see. ``status`` is the HTTP status it maps to."""

    status: int = 400
    code: str = "BackupService.0001"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def body(self) -> dict[str, str]:
        return {"error_code": self.code, "error_msg": self.message}

    def __reduce__(self):
        # pickles with its code and status (an error raised in a worker process reaches the caller)
        return (self.__class__, (self.message,), self.__dict__)

    def __str__(self) -> str:  # pragma: no cover - trivial
        return f"{self.code}: {self.message}"


class InvalidParameter(CBRError):
    """A request field is missing, malformed or out of range (HTTP 400)."""

    status = 400
    code = "BackupService.6001"


class QuotaExceeded(CBRError):
    """A count or size limit of the guide would be exceeded (HTTP 400)."""

    status = 400
    code = "BackupService.6003"


class StateConflict(CBRError):
    """The object is not in a state that allows the operation (HTTP 409)."""

    status = 409
    code = "BackupService.6005"


class NotFound(CBRError):
    """No such object in the caller's project (HTTP 404). Never reveals other projects' objects."""

    status = 404
    code = "BackupService.6002"


class Unauthorized(CBRError):
    """Missing, unknown or wrong credentials or signature (HTTP 401)."""

    status = 401
    code = "APIGW.0301"


class Forbidden(CBRError):
    """Authenticated, but not allowed: wrong project, or a role that may not do this (HTTP 403)."""

    status = 403
    code = "APIGW.0302"


class DataCorruption(CBRError):
    """Stored data failed its integrity check (digest or authentication tag mismatch)."""

    status = 409
    code = "BackupService.6010"


class StorageFull(CBRError):
    """The object store's or the catalog's storage is full, or below the space kept in reserve so that
    deletes still work (HTTP 503: retry once space is freed). The message says what ran out."""

    status = 503
    code = "BackupService.6012"
