"""The console's sharing (guide 4.2): the sharer shares a disk backup from the backup list's More menu,
the recipient (another account) finds it on "Shared with Me", accepts it into a vault and creates a
disk from it; the sharer cancels sharing."""

from __future__ import annotations

from tests.console.test_console import browser, dialog, expect, nav, page, row, server, sign_in  # noqa: F401
from tests.support.clients import api, new_tenant, sdk, sdk_wait_backups, task_ok
from tests.support.disks import MiB, make_image, sha256


def test_share_accept_and_create_a_disk(page, server, tmp_path):  # noqa: F811
    owner = api(server)
    img = make_image(tmp_path / "shared.img", MiB, seed=41)
    disk = owner.post("/inventory/disks", {"name": "console-shared", "path": img})["disk"]
    vault = owner.post("/vaults", {"vault": {"name": "console-share", "resources": [
        {"id": disk["id"], "type": "OS::Cinder::Volume"}], "billing": {"object_type": "disk", "size": 10}}})["vault"]
    cp = owner.post("/checkpoints", {"checkpoint": {"vault_id": vault["id"], "parameters": {"name": "console-shared-bk"}}})
    (bid,) = [b["id"] for b in owner.get("/backups", checkpoint_id=cp["checkpoint"]["id"])["backups"]]
    sdk_wait_backups(sdk(server), [bid])
    other = new_tenant(server, "console-recipient")
    inbox = api(server, other).post("/vaults", {"vault": {"name": "console-inbox", "billing": {
        "object_type": "disk", "size": 10}}})["vault"]

    sign_in(page, server.admin)
    nav(page, "Cloud Disk Backups")
    page.get_by_role("tab", name="Backups").click()
    backup_row = row(page, "backup-name", "console-shared-bk")
    backup_row.get_by_role("button", name="More ▾").click()
    page.get_by_role("menuitem", name="Share").click()
    dialog(page).get_by_label("Add projects").fill(other.project_id)
    dialog(page).get_by_role("button", name="Share").click()
    expect(dialog(page)).to_have_count(0)
    assert [m["dest_project_id"] for m in owner.get(f"/backups/{bid}/members")["members"]] == [other.project_id]

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, other)
    nav(page, "Shared with Me")
    shared = row(page, "backup-name", "console-shared-bk")
    expect(shared).to_contain_text("Pending")
    shared.get_by_role("button", name="Accept").click()
    expect(dialog(page).get_by_label("Vault")).to_have_value(inbox["id"])
    dialog(page).get_by_role("button", name="Accept").click()
    expect(dialog(page)).to_have_count(0)
    expect(shared).to_contain_text("Accepted")
    expect(shared).to_contain_text("console-inbox")
    shared.get_by_role("button", name="More ▾").click()
    page.get_by_role("menuitem", name="Create Disk").click()
    dialog(page).get_by_label("Image file").fill(str(tmp_path / "copy.img"))
    dialog(page).get_by_role("button", name="Next").click()
    expect(dialog(page)).to_have_count(0)
    task = api(server, other).get("/operation-logs", operation_type="create_disk")["operation_logs"][0]
    task_ok(api(server, other), task["id"])
    assert sha256(tmp_path / "copy.img") == sha256(img)

    page.get_by_role("button", name="Sign out").click()
    sign_in(page, server.admin)
    nav(page, "Cloud Disk Backups")
    page.get_by_role("tab", name="Backups").click()
    row(page, "backup-name", "console-shared-bk").get_by_role("button", name="More ▾").click()
    page.get_by_role("menuitem", name="Share").click()
    member = dialog(page).locator(f"tr[data-member-id='{other.project_id}']")
    expect(member).to_contain_text("Accepted")
    member.get_by_role("button", name="Cancel Sharing").click()
    expect(dialog(page)).to_contain_text("Not shared with any project yet.")
    assert owner.get(f"/backups/{bid}/members")["members"] == []
