"""Engine and storage errors in CBR terms: the ONE table from the exceptions the engine and the object
store raise (meaning only, see ``engine/errors.py`` and ``storage/errors.py``) to the CBR error (code and
HTTP status) that task rows record and the API answers. It lives in services, where the API and the
workers meet: task failures are recorded by worker processes, which never load the API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial

from opencbr.domain.errors import CBRError, DataCorruption, InvalidParameter, NotFound, StateConflict
from opencbr.engine.errors import Conflict, Damaged, EngineError, InvalidArgument, Missing, OperationCancelled
from opencbr.storage.errors import BadStoreURL, StoreError

#: engine/storage exception type -> the CBR error it is answered with (code, status); a subclass not
#: listed takes its base's entry. The codes are those the engine raised before it had errors of its own.
CBR_ERRORS: dict[type[Exception], Callable[[str], CBRError]] = {
    Damaged: DataCorruption,  # 409 BackupService.6010
    Missing: NotFound,  # 404 BackupService.6002
    InvalidArgument: InvalidParameter,  # 400 BackupService.6001
    Conflict: StateConflict,  # 409 BackupService.6005
    OperationCancelled: partial(CBRError, code="BackupService.6011", status=409),
    BadStoreURL: InvalidParameter,
}


def cbr_error(exc: BaseException) -> CBRError | None:
    """The CBR error ``exc`` means, if it is an engine or storage error; None for anything else."""
    for cls in type(exc).__mro__:
        if cls in CBR_ERRORS:
            return CBR_ERRORS[cls](str(exc) or type(exc).__name__)
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
