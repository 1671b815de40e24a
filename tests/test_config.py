"""Settings: the worker processes' priority is a setting, within the nice range."""

from __future__ import annotations

import pytest

from opencbr.config import load_settings


def test_worker_nice_defaults_to_10_and_comes_from_the_environment(tmp_path):
    assert load_settings(env={"OPENCBR_DATA_DIR": str(tmp_path)}).worker_nice == 10
    assert load_settings(env={"OPENCBR_DATA_DIR": str(tmp_path), "OPENCBR_WORKER_NICE": "0"}).worker_nice == 0


@pytest.mark.parametrize("value", ["-1", "20"])
def test_worker_nice_outside_0_to_19_is_refused(tmp_path, value):
    with pytest.raises(ValueError, match="worker_nice"):
        load_settings(env={"OPENCBR_DATA_DIR": str(tmp_path), "OPENCBR_WORKER_NICE": value})


def test_restore_nice_defaults_to_0_and_is_checked(tmp_path):
    assert load_settings(env={"OPENCBR_DATA_DIR": str(tmp_path)}).restore_nice == 0
    assert load_settings(env={"OPENCBR_DATA_DIR": str(tmp_path), "OPENCBR_RESTORE_NICE": "5"}).restore_nice == 5
    with pytest.raises(ValueError, match="restore_nice"):
        load_settings(env={"OPENCBR_DATA_DIR": str(tmp_path), "OPENCBR_RESTORE_NICE": "20"})
