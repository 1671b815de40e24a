"""Times reach users of the official SDK as ``datetime``/``date`` values (CBR v3 API 1).

The SDK appends ``Z`` to every time it parses unless the string already ends in one, so a time sent
with an offset (``...+00:00``) became ``...+00:00Z``, which ``dateutil`` refuses: the SDK warned and
handed the caller the raw string instead of a ``datetime``.
"""

from __future__ import annotations

import warnings
from datetime import date, datetime, timedelta, timezone

from huaweicloudsdkcbr.v1 import (
    BillingCreate,
    CheckpointParam,
    CreateCheckpointRequest,
    CreateVaultRequest,
    ListBackupsRequest,
    ResourceCreate,
    ShowBackupRequest,
    ShowCheckpointRequest,
    VaultBackup,
    VaultBackupReq,
    VaultCreate,
    VaultCreateReq,
)

from tests.support.clients import api, sdk, sdk_wait_backups
from tests.support.disks import MiB, make_image


def test_backup_times_are_datetimes_in_utc_without_a_conversion_warning(server, tmp_path):
    c = sdk(server)
    client = api(server)
    img = make_image(tmp_path / "t.img", 1 * MiB, seed=3)
    disk = client.post("/inventory/disks", {"name": f"times-{server.backend}", "path": img})["disk"]
    billing = BillingCreate(consistent_level="crash_consistent", object_type="disk", protect_type="backup", size=10)
    vault = c.create_vault(CreateVaultRequest(body=VaultCreateReq(vault=VaultCreate(
        name=f"times-{server.backend}", billing=billing,
        resources=[ResourceCreate(id=disk["id"], type="OS::Cinder::Volume")])))).vault
    before = datetime.now(timezone.utc) - timedelta(seconds=5)
    cp = c.create_checkpoint(CreateCheckpointRequest(body=VaultBackupReq(checkpoint=VaultBackup(
        vault_id=vault.id, parameters=CheckpointParam(retention_duration_days=7))))).checkpoint
    bid = client.get("/backups", checkpoint_id=cp.id)["backups"][0]["id"]
    sdk_wait_backups(c, [bid])
    after = datetime.now(timezone.utc) + timedelta(seconds=5)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a time the SDK cannot parse is a warning: fail on it
        listed = c.list_backups(ListBackupsRequest(vault_id=vault.id)).backups
        shown = c.show_backup(ShowBackupRequest(backup_id=bid)).backup
        checkpoint = c.show_checkpoint(ShowCheckpointRequest(checkpoint_id=cp.id)).checkpoint

    for b in (listed[0], shown):
        for value in (b.created_at, b.updated_at, b.expired_at):
            assert isinstance(value, datetime), value
            assert value.utcoffset() == timedelta(0)
        assert before <= b.created_at <= b.updated_at <= after
        assert b.expired_at - b.created_at > timedelta(days=6)
        assert isinstance(b.protected_at, date)
    # the SDK types a checkpoint's created_at as a string: the same UTC time without a zone designator
    assert before <= datetime.fromisoformat(checkpoint.created_at).replace(tzinfo=timezone.utc) <= after

    raw = client.get(f"/backups/{bid}")["backup"]
    assert raw["created_at"].count(":") == 2 and not raw["created_at"].endswith("Z")  # no zone designator
