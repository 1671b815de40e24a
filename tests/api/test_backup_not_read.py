"""A file-system backup says for its whole life what it could not read as it was (``partial``,
``warning_count``), not only its task, which names the files and is purged after 30 days; and it says
so without naming a file (what is inside a backup is not for read-only users: README, *Roles*)."""

from __future__ import annotations

import json

from opencbr.api import wire
from opencbr.catalog.models import Backup
from opencbr.cli.backups import _row


def _backup(details: dict) -> Backup:
    return Backup(id="b1", name="n", description="", checkpoint_id="c", project_id="p", vault_id="v",
                  resource_id="r", resource_name="fs", resource_type="OS::Sfs::Turbo", resource_size_bytes=1 << 30,
                  resource_az="az", image_type="backup", status="available", auto_trigger=False, policy_id="",
                  incremental=True, full_requested=False, encrypted=True, used_by_image=False, logical_bytes=5,
                  added_bytes=1, details=details, error_code="", error_message="", task_id="t-1")


def test_a_partial_backup_says_so_on_its_own_record():
    warnings = [{"path": "/locked/s", "message": "cannot open: Permission denied", "partial": True},
                {"path": "/live/app.log", "message": "changed while it was being read (stored as read)",
                 "partial": False}]
    out = wire.backup_resp(_backup({"consistency": {"method": "live-tree"}, "partial": True,
                                    "warnings": warnings, "stats": {"warnings_dropped": 3}}))
    assert out["partial"] is True and out["warning_count"] == 5
    assert "/locked/s" not in json.dumps(out) and "app.log" not in json.dumps(out)
    text = _row(out)["read_text"]
    assert text.startswith("PARTIAL") and "5 file(s)" in text and "cbr task show t-1" in text

    clean = wire.backup_resp(_backup({"consistency": {"method": "live-tree"}, "partial": False, "warnings": []}))
    assert clean["partial"] is False and clean["warning_count"] == 0 and _row(clean)["read_text"] == ""
    disk = wire.backup_resp(_backup({"consistency": {"method": "live"}}))  # a disk backup: nothing to say
    assert disk["partial"] is False and disk["warning_count"] == 0
