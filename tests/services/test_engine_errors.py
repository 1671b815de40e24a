"""The one table from engine errors to CBR errors: codes and statuses on the wire stay what they were."""

from __future__ import annotations

import pickle

from opencbr.domain.errors import CBRError
from opencbr.engine.errors import BackupCancelled, EngineError, OperationCancelled, RestoreCancelled
from opencbr.services.engine_errors import CBR_CODES, cbr_error


def test_cancelled_operations_are_conflicts_6011():
    for exc in (OperationCancelled("stopped"), BackupCancelled("backup stopped"), RestoreCancelled("restore stopped")):
        err = cbr_error(exc)
        assert isinstance(err, CBRError)
        assert (err.code, err.status, err.message) == ("BackupService.6011", 409, str(exc))


def test_every_engine_error_type_has_a_code_and_nothing_else_is_mapped():
    assert all(issubclass(t, EngineError) for t in CBR_CODES)
    assert cbr_error(ValueError("not ours")) is None
    assert cbr_error(CBRError("already a CBR error")) is None


def test_engine_errors_carry_no_wire_format_and_cross_processes():
    exc = pickle.loads(pickle.dumps(RestoreCancelled("restore stopped")))
    assert isinstance(exc, RestoreCancelled) and str(exc) == "restore stopped"
    assert not hasattr(exc, "code") and not hasattr(exc, "status")
