"""The one table from engine and storage errors to CBR errors: codes, statuses and messages on the wire
stay what they were when the engine raised the domain's errors itself."""

from __future__ import annotations

import pickle

import pytest

from opencbr.domain.errors import CBRError, DataCorruption, InvalidParameter, NotFound, StateConflict
from opencbr.engine.errors import (
    BackupCancelled,
    Conflict,
    Damaged,
    EngineError,
    InvalidArgument,
    Missing,
    OperationCancelled,
    RestoreCancelled,
)
from opencbr.services.engine_errors import CBR_ERRORS, cbr_error, translated
from opencbr.storage import open_store
from opencbr.storage.errors import BadStoreURL, StoreError


def test_cancelled_operations_are_conflicts_6011():
    for exc in (OperationCancelled("stopped"), BackupCancelled("backup stopped"), RestoreCancelled("restore stopped")):
        err = cbr_error(exc)
        assert isinstance(err, CBRError)
        assert (err.code, err.status, err.message) == ("BackupService.6011", 409, str(exc))


@pytest.mark.parametrize("exc, cls, code, status", [
    (Damaged("chunk ab: digest mismatch", digest=b"\xab"), DataCorruption, "BackupService.6010", 409),
    (Missing("backup b1 is not in the repository"), NotFound, "BackupService.6002", 404),
    (InvalidArgument("invalid path '..'"), InvalidParameter, "BackupService.6001", 400),
    (Conflict("backup b1 already exists in the repository"), StateConflict, "BackupService.6005", 409),
    (BadStoreURL("unsupported store URL scheme 'ftp'"), InvalidParameter, "BackupService.6001", 400),
])
def test_each_meaning_keeps_the_code_status_and_message_it_had(exc, cls, code, status):
    err = cbr_error(exc)
    assert type(err) is cls and (err.code, err.status, err.message) == (code, status, str(exc))


def test_every_engine_error_type_has_a_code_and_nothing_else_is_mapped():
    assert all(issubclass(t, (EngineError, StoreError)) for t in CBR_ERRORS)
    assert cbr_error(ValueError("not ours")) is None
    assert cbr_error(CBRError("already a CBR error")) is None


def test_engine_errors_carry_no_wire_format_and_cross_processes():
    exc = pickle.loads(pickle.dumps(RestoreCancelled("restore stopped")))
    assert isinstance(exc, RestoreCancelled) and str(exc) == "restore stopped"
    assert not hasattr(exc, "code") and not hasattr(exc, "status")
    damaged = pickle.loads(pickle.dumps(Damaged("chunk ab: digest mismatch", digest=b"\xab", backup_id="b1")))
    assert (str(damaged), damaged.digest, damaged.backup_id) == ("chunk ab: digest mismatch", b"\xab", "b1")


def test_translated_raises_what_an_engine_or_store_error_means():
    with pytest.raises(NotFound, match="no repository"):
        with translated():
            raise Missing("no repository at 'vaults/v1/'")
    with pytest.raises(InvalidParameter, match="store URL"):
        with translated():
            open_store("ftp://host/x")
    with pytest.raises(ValueError):  # not ours: through unchanged
        with translated():
            raise ValueError("a bug")
