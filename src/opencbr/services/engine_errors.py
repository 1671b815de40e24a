"""Engine and storage errors in CBR terms: the ONE table from the exceptions the engine and the object
store raise (meaning only, see ``engine/errors.py`` and ``storage/errors.py``) to the CBR error (code and
HTTP status) that task rows record and the API answers. It lives in services, where the API and the
workers meet: task failures are recorded by worker processes, which never load the API."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opencbr.domain.errors import CBRError, DataCorruption, InvalidParameter, NotFound, StateConflict
from opencbr.engine.errors import Conflict, Damaged, EngineError, InvalidArgument, Missing, OperationCancelled
from opencbr.storage.errors import BadStoreURL, StoreError

#: engine/storage exception type -> the CBR error class it is answered with (its code and status);
#: a subclass not listed takes its base's entry
CBR_ERRORS: dict[type[Exception], type[CBRError]] = {
    Damaged: DataCorruption,  # 409 BackupService.6010
    Missing: NotFound,  # 404 BackupService.6002
    InvalidArgument: InvalidParameter,  # 400 BackupService.6001
    Conflict: StateConflict,  # 409 BackupService.6005
    BadStoreURL: InvalidParameter,
}

#: engine exception type -> (CBR code, HTTP status), for errors with no domain class of their own
CBR_CODES: dict[type[Exception], tuple[str, int]] = {
    OperationCancelled: ("BackupService.6011", 409),
}


def cbr_error(exc: BaseException) -> CBRError | None:
    """The CBR error ``exc`` means, if it is an engine or storage error; None for anything else."""
    if not isinstance(exc, (EngineError, StoreError)):
        return None
    message = str(exc) or type(exc).__name__
    for cls in type(exc).__mro__:
        if cls in CBR_ERRORS:
            return CBR_ERRORS[cls](message)
        if cls in CBR_CODES:
            code, status = CBR_CODES[cls]
            return CBRError(message, code=code, status=status)
    return None


@contextmanager
def translated() -> Iterator[None]:
    """Raise engine and storage errors of the block as the CBR errors they mean: for engine calls in
    services whose callers (the API, other services) expect CBR errors."""
    try:
        yield
    except (EngineError, StoreError) as e:
        err = cbr_error(e)
        if err is None:
            raise
        raise err from e
