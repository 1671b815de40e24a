"""What every service process checks at start (``server/process.py``): the object store refuses to
overwrite on a create-only write, and the process holds the installation's master key (a process on
another machine that was not given it stops, saying why, instead of making a key of its own)."""

from __future__ import annotations

import os
import secrets

import pytest

from opencbr.catalog.models import Vault
from opencbr.config import load_settings
from opencbr.server.process import (
    MASTER_KEY_CHECK,
    WRITE_PROBES,
    ForeignMasterKey,
    UnsafeObjectStore,
    check_create_only_writes,
    check_master_key,
)
from opencbr.services import repositories, vaults
from opencbr.services.context import open_context
from opencbr.storage import open_store
from opencbr.storage.local import LocalStore
from tests.support.s3 import s3_store_url


@pytest.fixture(scope="module")
def empty_catalog(tmp_path_factory):
    """One migrated catalog without vaults, shared by the tests that only read it."""
    url = f"sqlite:///{tmp_path_factory.mktemp('catalog') / 'catalog.db'}"
    open_context(load_settings(env={}, catalog_url=url)).close()
    return url


@pytest.fixture()
def process_context(tmp_path, empty_catalog):
    """The context of one process on a machine (its own data directory) sharing the object store and
    the catalog of the installation."""
    made = []

    def on(machine: str, **env: str):
        settings = load_settings(env={"OPENCBR_DATA_DIR": str(tmp_path / machine),
                                      "OPENCBR_CATALOG_URL": empty_catalog,
                                      "OPENCBR_OBJECT_STORE": f"file://{tmp_path / 'shared-store'}", **env})
        made.append(open_context(settings, migrate=False))
        return made[-1]

    yield on
    for c in made:
        c.close()


def test_processes_with_the_installations_key_start(tmp_path, process_context):
    first = process_context("api")
    check_master_key(first)  # the first start writes the check value
    key_hex = first.master_key.hex()
    check_master_key(process_context("worker", OPENCBR_MASTER_KEY=key_hex))
    check_master_key(process_context("api"))  # a restart reads its key file again
    stored = open(tmp_path / "shared-store" / MASTER_KEY_CHECK).read()
    assert key_hex not in stored and "hmac_sha256" in stored


def test_a_machine_without_the_key_is_refused(tmp_path, process_context):
    check_master_key(process_context("api"))
    with pytest.raises(ForeignMasterKey) as e:
        check_master_key(process_context("worker"))  # no key given: it made one of its own
    made = str(tmp_path / "worker" / "master.key")
    assert f"({made}) is not the installation's" in e.value.message
    assert f"{made} was created just now by this process: remove it" in e.value.message
    assert os.path.exists(made)


def test_a_wrong_key_in_the_environment_is_refused(process_context):
    check_master_key(process_context("api"))
    with pytest.raises(ForeignMasterKey) as e:
        check_master_key(process_context("worker", OPENCBR_MASTER_KEY=secrets.token_hex(32)))
    assert "(OPENCBR_MASTER_KEY) is not the installation's" in e.value.message
    assert "created just now" not in e.value.message


class OverwritingStore(LocalStore):
    """Stands for an S3 server that ignores ``If-None-Match: *`` (it overwrites and answers 200)."""

    def put_if_absent(self, key: str, data, *, sync: bool = True) -> bool:
        self.put(key, data)
        return True


def test_stores_that_refuse_to_overwrite_pass_and_leave_nothing(tmp_path, moto_url):
    for store in (open_store(s3_store_url(moto_url)), LocalStore(tmp_path / "local")):
        check_create_only_writes(store)
        assert list(store.list(WRITE_PROBES)) == []


def test_a_store_that_overwrites_is_refused(tmp_path):
    store = OverwritingStore(tmp_path / "overwrites")
    with pytest.raises(UnsafeObjectStore) as e:
        check_create_only_writes(store)
    assert "If-None-Match: *" in e.value.message
    assert list(store.list(WRITE_PROBES)) == []


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)  # one query, no catalog rule: one backend
def test_before_the_first_check_value_the_key_must_open_the_vaults(ctx, tenant):
    """An installation made before the check existed: the first process to start after the upgrade
    becomes the reference only if its key opens the vaults that are there."""
    with ctx.tx() as s:
        view = vaults.create_vault(s, ctx, tenant, {"name": "old", "billing": {
            "object_type": "disk", "size": 10, "consistent_level": "crash_consistent", "protect_type": "backup"}})
    with ctx.read() as s:
        repositories.repository(ctx, s.get(Vault, view.vault.id))  # created with the installation's key
    wrong = open_context(load_settings(env={}, data_dir=ctx.settings.data_dir, catalog_url=ctx.settings.catalog_url,
                                       object_store=ctx.settings.effective_object_store,
                                       master_key_hex=secrets.token_hex(32)), migrate=False)
    try:
        with pytest.raises(ForeignMasterKey):
            check_master_key(wrong)
        assert ctx.store.stat(MASTER_KEY_CHECK) is None, "a wrong key became the reference"
        check_master_key(ctx)
        with pytest.raises(ForeignMasterKey):
            check_master_key(wrong)
    finally:
        wrong.close()
