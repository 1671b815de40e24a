"""Every process of an installation holds the one master key (``server/process.py``): a process on
another machine that was not given it stops at start, saying why, instead of making a key of its own."""

from __future__ import annotations

import os
import secrets

import pytest

from opencbr.config import load_settings
from opencbr.server.process import MASTER_KEY_CHECK, ForeignMasterKey, check_master_key
from opencbr.services.context import open_context


def process_context(tmp_path, machine: str, **env: str):
    """The context of one process on ``machine`` (its own data directory) sharing one object store; the
    catalog is not used by the check, so it is not opened."""
    settings = load_settings(env={"OPENCBR_DATA_DIR": str(tmp_path / machine),
                                  "OPENCBR_OBJECT_STORE": f"file://{tmp_path / 'shared-store'}", **env})
    return open_context(settings, migrate=False)


def test_processes_with_the_installations_key_start(tmp_path):
    first = process_context(tmp_path, "api")
    check_master_key(first)  # the first start writes the check value
    key_hex = first.master_key.hex()
    check_master_key(process_context(tmp_path, "worker", OPENCBR_MASTER_KEY=key_hex))
    check_master_key(process_context(tmp_path, "api"))  # a restart reads its key file again
    stored = open(tmp_path / "shared-store" / MASTER_KEY_CHECK).read()
    assert key_hex not in stored and "hmac_sha256" in stored


def test_a_machine_without_the_key_is_refused(tmp_path):
    check_master_key(process_context(tmp_path, "api"))
    with pytest.raises(ForeignMasterKey) as e:
        check_master_key(process_context(tmp_path, "worker"))  # no key given: it made one of its own
    made = str(tmp_path / "worker" / "master.key")
    assert f"({made}) is not the installation's" in e.value.message
    assert f"{made} was created just now by this process: remove it" in e.value.message
    assert os.path.exists(made)


def test_a_wrong_key_in_the_environment_is_refused(tmp_path):
    check_master_key(process_context(tmp_path, "api"))
    with pytest.raises(ForeignMasterKey) as e:
        check_master_key(process_context(tmp_path, "worker", OPENCBR_MASTER_KEY=secrets.token_hex(32)))
    assert "(OPENCBR_MASTER_KEY) is not the installation's" in e.value.message
    assert "created just now" not in e.value.message
