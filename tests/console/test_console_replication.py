"""The console's "Create Replica" dialogs (one backup; a vault's backups) between two real installations
(region-a linked to region-b), and replicas shown with their source: the source backup's details list
its replicas, the replica's details in region-b say where it came from."""

from __future__ import annotations

import time

import pytest

from tests.console.test_console import ARGS, CHROMIUM, T, browser, dialog, expect, row, sign_in  # noqa: F401
from tests.support.clients import api, cli
from tests.support.databases import sqlite_url
from tests.support.disks import MiB, make_image
from tests.support.server import ServerProcess, free_port, wait_listening


@pytest.fixture(scope="module")
def two_regions(tmp_path_factory):
    da, db = str(tmp_path_factory.mktemp("c-region-a")), str(tmp_path_factory.mktemp("c-region-b"))
    receiver = f"127.0.0.1:{free_port()}"
    a = ServerProcess(da, sqlite_url(da), extra_env={"OPENCBR_REGION": "region-a"}).start()
    b = ServerProcess(db, sqlite_url(db), extra_env={"OPENCBR_REGION": "region-b",
                                                     "OPENCBR_REPLICATION_LISTEN": receiver}).start()
    try:
        token = cli(b, "admin", "region", "credential", "region-a", "--json").json()["token"]
        assert cli(a, "admin", "region", "add", "region-b", "--endpoint", receiver, "--credential", token).code == 0
        wait_listening(receiver)  # a worker process of region-b binds it after the API is up
        yield a, b
    finally:
        a.stop()
        b.stop()


def _page(browser, server):  # noqa: F811
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, base_url=server.url)
    pg = ctx.new_page()
    pg.set_default_timeout(T)
    return ctx, pg


def _source_backup(a, tmp_path) -> tuple[dict, dict]:
    client = api(a)
    img = make_image(tmp_path / "c.img", 4 * MiB, seed=3)
    disk = client.post("/inventory/disks", {"name": "c-disk", "path": img})["disk"]
    v = client.post("/vaults", {"vault": {"name": "c-src", "billing": {"object_type": "disk", "size": 10},
                                          "resources": [{"id": disk["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
    return v, _backed_up(client, v["id"])


def _backed_up(client, vault_id: str) -> dict:
    """A new checkpoint of the vault, waited for: its (first) backup, available."""
    cp = client.post("/checkpoints", {"checkpoint": {"vault_id": vault_id}})["checkpoint"]
    deadline = time.time() + 120
    while time.time() < deadline:
        bs = client.get("/backups", checkpoint_id=cp["id"])["backups"]
        if bs and bs[0]["status"] == "available":
            return bs[0]
        time.sleep(0.2)
    raise AssertionError("the backup did not complete")


def _record(a, backup_id: str) -> dict:
    deadline = time.time() + 120
    while time.time() < deadline:
        recs = api(a).get(f"/backups/{backup_id}")["backup"]["replication_records"]
        if recs and recs[-1]["status"] != "replicating":
            return recs[-1]
        time.sleep(0.2)
    raise AssertionError("the replication did not end")


def test_create_replica_dialogs_and_the_replica_with_its_source(browser, two_regions, tmp_path):  # noqa: F811
    a, b = two_regions
    vault, backup = _source_backup(a, tmp_path)
    dest = api(b).post("/vaults", {"vault": {"name": "c-dr", "billing": {
        "object_type": "disk", "protect_type": "replication", "size": 10}}})["vault"]
    ctx, page = _page(browser, a)
    sign_in(page, a.admin)
    page.goto("/console/#/disks/backups")
    r = row(page, "backup-name", backup["name"])
    r.get_by_role("button", name="More ▾").click()
    page.get_by_role("menuitem", name="Create Replica").click()
    dlg = dialog(page)
    expect(dlg.locator("select[name=destination-region]")).to_have_value("region-b")
    dlg.locator("input[name=destination-project]").fill(b.admin.project_id)
    dlg.locator("input[name=destination-vault]").fill(vault["id"])  # a backup vault of region-a: refused there
    dlg.get_by_role("button", name="OK").click()
    expect(dlg.get_by_role("alert")).to_contain_text("region-b refused")
    dlg.locator("input[name=destination-vault]").fill(dest["id"])
    dlg.get_by_role("button", name="OK").click()
    expect(dialog(page)).to_have_count(0)
    expect(page.locator(".toast").last).to_contain_text("Replication of")
    rec = _record(a, backup["id"])
    assert rec["status"] == "available", rec
    page.reload()
    row(page, "backup-name", backup["name"]).get_by_role("button", name=backup["name"]).click()
    expect(dialog(page)).to_contain_text("Replicas in other regions")
    expect(dialog(page).locator("table")).to_contain_text("region-b")
    expect(dialog(page).locator("table")).to_contain_text("Available")
    dialog(page).get_by_role("button", name="Close").first.click()

    # a vault's backups: each has a replica there already
    page.goto("/console/#/disks/vaults")
    row(page, "vault-name", "c-src").get_by_role("button", name="More ▾").click()
    page.get_by_role("menuitem", name="Create Replica").click()
    dlg = dialog(page)
    dlg.locator("input[name=destination-project]").fill(b.admin.project_id)
    dlg.locator("input[name=destination-vault]").fill(dest["id"])
    dlg.get_by_role("button", name="OK").click()
    expect(dialog(page)).to_have_count(0)
    expect(page.locator(".toast").last).to_contain_text("has a replica in that region already")
    ctx.close()

    # region-b's console: the replica, and where it came from
    ctx, page = _page(browser, b)
    sign_in(page, b.admin)
    page.goto("/console/#/disks/backups")
    replica = api(b).get(f"/backups/{rec['destination_backup_id']}")["backup"]
    r = row(page, "backup-name", replica["name"])
    menu = r.get_by_role("button", name="More ▾")
    menu.click()
    expect(page.get_by_role("menuitem", name="Create Replica")).to_be_disabled()  # a replica is not replicated
    page.keyboard.press("Escape")
    r.get_by_role("button", name=replica["name"]).click()
    expect(dialog(page).locator(".replica-source")).to_contain_text("region-a")
    expect(dialog(page).locator(".replica-source")).to_contain_text(backup["id"])
    ctx.close()


def test_sfs_turbo_backups_and_vaults_offer_create_replica(browser, two_regions, tmp_path):  # noqa: F811
    """Guide 4.4: an SFS Turbo backup is replicated from its More menu, into an SFS Turbo replication vault;
    the vault's More menu offers Create Replica too."""
    a, b = two_regions
    client = api(a)
    share = tmp_path / "share"
    (share / "docs").mkdir(parents=True)
    (share / "docs" / "readme.txt").write_text("replicated from the console\n")
    fs = client.post("/inventory/file-systems", {"name": "c-share", "path": str(share)})["file_system"]
    v = client.post("/vaults", {"vault": {"name": "c-turbo", "billing": {"object_type": "turbo", "size": 10},
                                          "resources": [{"id": fs["id"], "type": "OS::Sfs::Turbo"}]}})["vault"]
    backup = _backed_up(client, v["id"])
    dest = api(b).post("/vaults", {"vault": {"name": "c-dr-turbo", "billing": {
        "object_type": "turbo", "protect_type": "replication", "size": 10}}})["vault"]
    ctx, page = _page(browser, a)
    sign_in(page, a.admin)
    page.goto("/console/#/sfs-turbo/vaults")
    row(page, "vault-name", "c-turbo").get_by_role("button", name="More ▾").click()
    expect(page.get_by_role("menuitem", name="Create Replica")).to_be_enabled()
    page.keyboard.press("Escape")
    page.goto("/console/#/sfs-turbo/backups")
    row(page, "backup-name", backup["name"]).get_by_role("button", name="More ▾").click()
    page.get_by_role("menuitem", name="Create Replica").click()
    dlg = dialog(page)
    dlg.locator("input[name=destination-project]").fill(b.admin.project_id)
    dlg.locator("input[name=destination-vault]").fill(dest["id"])
    dlg.get_by_role("button", name="OK").click()
    expect(dialog(page)).to_have_count(0)
    rec = _record(a, backup["id"])
    assert rec["status"] == "available", rec
    ctx.close()
