"""Guide 7.3: an app-consistent vault's backup of a server no agent runs on is taken crash-consistent,
and the backup (``extend_info.app_consistency``, ``consistency.app``) and its task say so and why."""

from __future__ import annotations

from huaweicloudsdkcbr.v1 import ShowBackupRequest

from tests.support.clients import api, sdk, task_ok
from tests.support.disks import MiB, make_image


def test_a_local_server_in_an_app_consistent_vault_is_backed_up_crash_consistent_and_says_why(server, tmp_path):
    c, sfx = api(server), server.backend
    sd = c.post("/inventory/disks", {"name": f"app-s-{sfx}", "path": make_image(tmp_path / "s.img", 2 * MiB,
                                                                                 seed=17)})["disk"]
    srv = c.post("/inventory/servers", {"name": f"app-{sfx}", "system_disk": sd["id"], "status": "stopped"})["server"]
    v = c.post("/vaults", {"vault": {"name": f"app-{sfx}", "billing": {
        "object_type": "server", "size": 10, "consistent_level": "app_consistent", "protect_type": "backup"},
        "resources": [{"id": srv["id"], "type": "OS::Nova::Server"}]}})["vault"]
    cp = c.post("/checkpoints", {"checkpoint": {"vault_id": v["id"]}})
    b = c.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"][0]
    task = task_ok(c, b["task_id"])
    shown = c.get(f"/backups/{b['id']}")["backup"]
    said = shown["extend_info"]["app_consistency"]
    assert said["achieved"] == "crash_consistent" and "no agent" in said["reason"], said
    assert shown["consistency"]["app"]["achieved"] == "crash_consistent"
    assert "crash-consistent" in task["error_info"]["message"] and "no agent" in task["error_info"]["message"]
    assert task["extra_info"]["app_consistency"] == said
    # the official SDK still reads the backup (its known extend_info fields intact)
    got = sdk(server).show_backup(ShowBackupRequest(backup_id=b["id"])).backup
    assert got.extend_info.encrypted is not None and got.status == "available"
