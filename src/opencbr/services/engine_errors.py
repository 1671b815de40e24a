"""Engine errors in CBR terms: the ONE table from the exceptions the engine raises (meaning only, see
``engine/errors.py``) to the CBR error (code and HTTP status) that task rows record and the API answers.
It lives in services, where the API and the workers meet: task failures are recorded by worker
processes, which never load the API."""

from __future__ import annotations

from opencbr.domain.errors import CBRError
from opencbr.engine.errors import EngineError, OperationCancelled

#: engine exception type -> (CBR code, HTTP status); a subclass not listed takes its base's entry
CBR_CODES: dict[type[EngineError], tuple[str, int]] = {
    OperationCancelled: ("BackupService.6011", 409),
}


def cbr_error(exc: BaseException) -> CBRError | None:
    """The CBR error ``exc`` means, if it is an engine error; None for anything else."""
    for cls in type(exc).__mro__:
        if cls in CBR_CODES:
            code, status = CBR_CODES[cls]
            return CBRError(str(exc) or type(exc).__name__, code=code, status=status)
    return None
