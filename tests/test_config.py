"""Settings: the worker processes' priority is a setting, within the nice range."""

from __future__ import annotations

import os

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


def test_processes_starting_together_share_one_whole_master_key(tmp_path):
    """Processes of a fresh installation reading the key at once all get the one key that was made:
    none reads a half-written file (an empty key once sealed secrets nobody else could open)."""
    import subprocess
    import sys

    code = ("import sys; from opencbr.config import load_settings; "
            "print(load_settings(env={'OPENCBR_DATA_DIR': sys.argv[1]}).master_key().hex())")
    for attempt in range(5):
        data_dir = tmp_path / f"d{attempt}"
        procs = [subprocess.Popen([sys.executable, "-c", code, str(data_dir)], stdout=subprocess.PIPE, text=True)
                 for _ in range(6)]
        keys = {p.communicate()[0].strip() for p in procs}
        assert all(p.returncode == 0 for p in procs)
        assert keys == {(data_dir / "master.key").read_text().strip()}
        assert sorted(os.listdir(data_dir)) == ["master.key"]


@pytest.mark.parametrize("content", ["", "abcd\n", "not hex at all\n"])
def test_a_damaged_master_key_file_is_an_error_not_a_key(tmp_path, content):
    (tmp_path / "master.key").write_text(content)
    with pytest.raises(ValueError, match="master.key must hold 64 hex digits"):
        load_settings(env={"OPENCBR_DATA_DIR": str(tmp_path)}).master_key()
