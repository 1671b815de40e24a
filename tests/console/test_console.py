"""The web console in a real headless Chromium (Debian's ``/usr/bin/chromium``, driven by Playwright)
against a real server: sign in, register a disk, create a disk vault, back it up and watch the task in
the Tasks page, restore, delete; policies; the server's error messages; a read-only user.

Screenshots of the vault list and the backups page are written to the test's tmp dir (printed with -s).
"""

from __future__ import annotations

import os
import re

import pytest

from tests.support.clients import api, task_ok
from tests.support.disks import MiB, make_image, mutate, sha256
from tests.support.server import Creds, sqlite_server_fixture

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):  # pragma: no cover - depends on the machine
    pytest.skip(f"CONSOLE TESTS NOT RUN: {CHROMIUM} is missing (Debian package 'chromium'; `make deps-test` "
                "installs it)", allow_module_level=True)

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-dev-shm-usage"]
#: A zone east of UTC with no DST, so local 02:00 is 18:00 UTC the day before.
ZONE = "Asia/Shanghai"
T = 20_000  # ms, UI expectations
expect.set_options(timeout=T)


server = sqlite_server_fixture("console-srv")


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    ctx = browser.new_context(viewport={"width": 1440, "height": 900}, timezone_id=ZONE, base_url=server.url)
    pg = ctx.new_page()
    pg.set_default_timeout(T)
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    ctx.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def sign_in(page: Page, creds: Creds) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/console/#/login$"))
    page.fill("#ak", creds.ak)
    page.fill("#sk", creds.sk)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator(".sidenav")).to_be_visible()


def nav(page: Page, name: str) -> None:
    page.locator(".sidenav").get_by_role("link", name=name, exact=True).click()


def dialog(page: Page):
    return page.locator("dialog[open]")


def row(page: Page, attr: str, value: str):
    return page.locator(f"tr[data-{attr}='{value}']")


# ------------------------------------------------------------------------------------------------ tests
def test_static_files_and_redirect(server):
    import httpx

    r = httpx.get(server.url + "/", follow_redirects=False, trust_env=False)
    assert r.status_code in (302, 307) and r.headers["location"] == "/console/"
    r = httpx.get(server.url + "/console/", trust_env=False)
    assert r.status_code == 200 and "js/app.js" in r.text
    r = httpx.get(server.url + "/console/js/app.js", trust_env=False)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert httpx.get(server.url + "/console/../pyproject.toml", trust_env=False).status_code == 404
    assert httpx.get(server.url + "/console/%2e%2e/web.py", trust_env=False).status_code == 404
    assert f"Console     {server.url}/console/" in server.log()  # the serve banner names it


def test_wrong_secret_key_shows_the_error(page, server):
    page.goto("/console/")
    page.fill("#ak", server.admin.ak)
    page.fill("#sk", "not-the-secret-key")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("wrong access key or secret key")
    expect(page.locator(".sidenav")).to_have_count(0)
    # And sign-out ends the session: the token is gone from sessionStorage.
    sign_in(page, server.admin)
    assert page.evaluate("sessionStorage.getItem('opencbr.session')")
    page.get_by_role("button", name="Sign out").click()
    expect(page.locator("#ak")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('opencbr.session')") is None


def test_disk_vault_backup_task_restore_delete(page, server, tmp_path):
    img = make_image(tmp_path / "data1.img", size=64 * MiB, seed=7)
    original = sha256(img)
    sign_in(page, server.admin)

    # Register the disk on the Resources page.
    nav(page, "Resources")
    page.get_by_role("button", name="Register Disk").click()
    dialog(page).locator("input[name=res-name]").fill("data1")
    dialog(page).locator("input[name=res-path]").fill(img)
    dialog(page).get_by_role("button", name="Register").click()
    expect(dialog(page)).to_have_count(0)
    disk_row = page.locator("tr[data-resource-name='data1']")
    expect(disk_row).to_contain_text("Available")
    expect(disk_row).to_contain_text("64.0 MB")

    # Create a disk vault with it; first with a capacity the server refuses (guide 2.2.2: 10 GB minimum).
    nav(page, "Cloud Disk Backups")
    page.get_by_role("button", name="Create Disk Backup Vault").click()
    dlg = dialog(page)
    expect(dlg.get_by_text("data1")).to_be_visible()
    expect(dlg.locator("input[name=name]")).to_have_value(re.compile(r"^vault_[0-9a-f]{4}$"))
    dlg.get_by_label("Select data1").check()
    dlg.locator("input[name=capacity]").fill("5")
    dlg.locator("input[name=name]").fill("console-vault")
    dlg.get_by_role("button", name="Create").click()
    expect(dlg.get_by_role("alert")).to_contain_text("vault capacity must be between 10 and 10,485,760 GB, got 5")
    dlg.locator("input[name=capacity]").fill("20")
    dlg.get_by_role("button", name="Create").click()
    expect(dialog(page)).to_have_count(0)
    vrow = row(page, "vault-name", "console-vault")
    expect(vrow).to_contain_text("Available")
    expect(vrow).to_contain_text("20 GB")
    vault = api(server).get("/vaults", name="console-vault")["vaults"][0]
    assert [r["name"] for r in vault["resources"]] == ["data1"] and vault["encrypted"] is True

    # Search by name and by ID, and the status filter.
    page.get_by_placeholder("Search by name or ID").fill("no-such-vault")
    expect(page.get_by_text("No vault matches the search.")).to_be_visible()
    page.get_by_placeholder("Search by name or ID").fill(vault["id"][:13])
    expect(vrow).to_be_visible()
    page.get_by_placeholder("Search by name or ID").fill("")

    # Perform a backup, then watch the task on the Tasks page until it reaches 100 %.
    vrow.get_by_role("button", name="Perform Backup").click()
    dlg = dialog(page)
    expect(dlg.get_by_label("Select data1")).to_be_checked()
    dlg.locator("input[name=backup-name]").fill("console-bk1")
    dlg.get_by_role("button", name="OK").click()
    expect(dialog(page)).to_have_count(0)
    expect(page.locator(".toast").filter(has_text="Backup of 1 disk started")).to_be_visible()
    nav(page, "Tasks")
    task = page.locator("tr[data-type='backup']").first
    expect(task).to_be_visible()
    first_seen = task.get_attribute("data-status")
    expect(task).to_have_attribute("data-status", "success", timeout=60_000)  # no reload: the page polls
    expect(task.locator("[role=progressbar]")).to_have_attribute("aria-valuenow", "100")
    expect(task.locator(".pct")).to_have_text("100%")
    expect(task).to_contain_text("Successful")
    expect(task).to_contain_text("console-vault")
    print(f"backup task first seen as {first_seen!r} in the Tasks page")

    # The backup on the Backups tab, Available, with its sizes.
    nav(page, "Cloud Disk Backups")
    page.screenshot(path=str(tmp_path / "vault-list.png"), full_page=True)
    page.get_by_role("tab", name="Backups").click()
    brow = row(page, "backup-name", "console-bk1")
    expect(brow).to_contain_text("Available")
    expect(brow).to_contain_text("64.0 MB")
    expect(brow).to_contain_text("Manual")
    page.get_by_placeholder("Backup name").fill("nothing-like-this")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("No backups found")).to_be_visible()
    page.get_by_role("button", name="Reset").click()
    expect(brow).to_be_visible()
    page.screenshot(path=str(tmp_path / "backups.png"), full_page=True)
    print(f"screenshots: {tmp_path / 'vault-list.png'} {tmp_path / 'backups.png'}")

    # Restore the disk (after changing it), confirm, and check the data came back.
    mutate(img, seed=11)
    assert sha256(img) != original
    brow.get_by_role("button", name="Restore Disk").click()
    expect(dialog(page)).to_contain_text("overwrite the current disk data")
    dialog(page).get_by_role("button", name="Restore").click()
    expect(dialog(page)).to_have_count(0)
    expect(page.locator(".toast").filter(has_text="Restoration started")).to_be_visible()
    client = api(server)
    restore = client.get("/operation-logs", operation_type="restore")["operation_logs"][0]
    task_ok(client, restore["id"])
    assert sha256(img) == original
    expect(brow).to_have_attribute("data-status", "available")

    # Delete it, with confirmation; the row goes away.
    brow.get_by_role("button", name="More ▾").click()
    page.get_by_role("menuitem", name="Delete").click()
    expect(dialog(page)).to_contain_text("Are you sure you want to delete backup console-bk1?")
    dialog(page).get_by_role("button", name="Yes").click()
    expect(dialog(page)).to_have_count(0)
    expect(row(page, "backup-name", "console-bk1")).to_have_count(0, timeout=60_000)
    assert client.get("/backups", vault_id=vault["id"])["count"] == 0


def test_policy_create_preview_and_apply(page, server, tmp_path):
    client = api(server)
    img = make_image(tmp_path / "data2.img", size=4 * MiB, seed=3)
    disk = client.post("/inventory/disks", {"name": "data2", "path": img})["disk"]
    vault = client.post("/vaults", {"vault": {"name": "policy-vault", "billing": {"object_type": "disk", "size": 10},
                                              "resources": [{"id": disk["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
    sign_in(page, server.admin)
    nav(page, "Policies")
    page.get_by_role("button", name="Create Policy").click()
    dlg = dialog(page)
    dlg.locator("input[name=policy-name]").fill("nightly")
    # Defaults: every day of the week at 02:00 local time. Keep 7 backups.
    expect(dlg.locator(".utc-preview")).to_contain_text("BYHOUR=18")
    dlg.get_by_text("Backup quantity").click()
    dlg.locator("input[name=max-backups]").fill("7")
    dlg.get_by_role("button", name="OK").click()
    expect(dialog(page)).to_have_count(0)
    prow = row(page, "policy-name", "nightly")
    expect(prow).to_contain_text("Every day at 02:00")
    expect(prow).to_contain_text("Keep the latest 7 backups")
    pol = [p for p in client.get("/policies")["policies"] if p["name"] == "nightly"][0]
    # Local 02:00 in UTC+08:00 is 18:00 UTC of the day before: the same days, shifted back.
    assert pol["trigger"]["properties"]["pattern"] == ["FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA,SU;BYHOUR=18;BYMINUTE=00"]
    assert pol["operation_definition"]["max_backups"] == 7 and pol["enabled"] is True

    # Modify it: also at 14:00 local, and disabled.
    prow.get_by_role("button", name="Modify").click()
    dlg = dialog(page)
    expect(dlg.locator("input[name=hour][value='02:00']")).to_be_checked()
    dlg.locator(".hours label", has_text="14:00").click()
    dlg.locator("label.switch", has_text="Enabled").click()
    dlg.get_by_role("button", name="OK").click()
    expect(dialog(page)).to_have_count(0)
    expect(prow).to_contain_text("Every day at 02:00, 14:00")
    expect(prow).to_contain_text("Disabled")
    pol = client.get(f"/policies/{pol['id']}")["policy"]
    # 02:00 local falls on the day before in UTC, 14:00 on the same day: one pattern each (as the CLI makes).
    assert sorted(pol["trigger"]["properties"]["pattern"]) == ["FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA,SU;BYHOUR=18;BYMINUTE=00",
                                                               "FREQ=WEEKLY;BYDAY=MO,TU,WE,TH,FR,SA,SU;BYHOUR=6;BYMINUTE=00"]
    assert pol["enabled"] is False and pol["operation_definition"]["max_backups"] == 7

    # The next runs, shown in local time.
    prow.get_by_role("button", name="Next Runs").click()
    dlg = dialog(page)
    expect(dlg.locator("tbody tr")).to_have_count(10)
    expect(dlg.locator("tbody tr").first).to_contain_text(re.compile(r"(02|14):00"))
    dlg.get_by_role("button", name="Close").first.click()

    # A bad policy: the server's message shows in the dialog.
    page.get_by_role("button", name="Create Policy").click()
    dlg = dialog(page)
    dlg.locator("input[name=policy-name]").fill("bad name with spaces")
    dlg.get_by_role("button", name="OK").click()
    expect(dlg.get_by_role("alert")).to_contain_text("letters, digits")
    dlg.get_by_role("button", name="Cancel").click()

    # Apply it to the vault from the vault list (More > Apply Backup Policy).
    nav(page, "Cloud Disk Backups")
    vrow = row(page, "vault-name", "policy-vault")
    vrow.get_by_role("button", name="More ▾").click()
    page.get_by_role("menuitem", name="Apply Backup Policy").click()
    dlg = dialog(page)
    dlg.locator("select[name=policy]").select_option(label="nightly")
    dlg.get_by_role("button", name="OK").click()
    expect(dialog(page)).to_have_count(0)
    expect(vrow.get_by_role("link", name="nightly")).to_be_visible()
    assert pol["id"] in client.get(f"/vaults/{vault['id']}")["vault"]["policy_ids"]

    # The vault details page shows it, and can remove it.
    vrow.get_by_role("link", name="policy-vault").click()
    expect(page.locator(".card").filter(has_text="Policies")).to_contain_text("Every day at 02:00")
    page.get_by_role("button", name="Remove Policy").click()
    dialog(page).get_by_role("button", name="Yes").click()
    expect(page.get_by_role("button", name="Apply Backup Policy")).to_be_visible()
    assert client.get(f"/vaults/{vault['id']}")["vault"]["policy_ids"] == []


def test_read_only_user_cannot_create(page, server):
    admin = api(server)
    admin.post("/iam/users", {"name": "viewer", "role": "readonly"})
    cred = admin.post("/iam/credentials", {"user_name": "viewer"})["credential"]
    sign_in(page, Creds(cred["access_key"], cred["secret_key"], server.admin.project_id))
    expect(page.locator("#whoami")).to_contain_text("readonly")
    expect(page.locator(".sidenav").get_by_role("link", name="Audit")).to_have_count(0)
    nav(page, "Cloud Disk Backups")
    create = page.get_by_role("button", name="Create Disk Backup Vault")
    expect(create).to_be_disabled()
    expect(create).to_have_attribute("title", re.compile("read-only"))
    # Even when forced, the API refuses and the console says why.
    create.evaluate("b => { b.disabled = false; b.removeAttribute('aria-disabled'); }")
    create.click()
    dlg = dialog(page)
    dlg.locator("input[name=capacity]").fill("10")
    dlg.get_by_role("button", name="Create").click()
    expect(dlg.get_by_role("alert")).to_contain_text("read-only role and cannot change anything")
    assert api(server).get("/vaults", name=dlg.locator("input[name=name]").input_value())["count"] == 0


def test_backup_only_user_backs_up_and_sees_no_destructive_action(page, server, tmp_path):
    """The backup-only role (docs/roles.md): Perform Backup and enrolment tokens, usable; restore, delete,
    download, browse, verify, share, policies and the vault's settings: not shown at all."""
    admin = api(server)
    img = make_image(tmp_path / "bo.img", size=4 * MiB, seed=3)
    disk = admin.post("/inventory/disks", {"name": "bo-disk", "path": img})["disk"]
    vault = admin.post("/vaults", {"vault": {"name": "bo-vault", "billing": {"object_type": "disk", "size": 10},
                                             "resources": [{"id": disk["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
    cp = admin.post("/checkpoints", {"checkpoint": {"vault_id": vault["id"], "parameters": {"name": "bo-first"}}})
    task_ok(admin, admin.get(f"/backups/{cp['checkpoint']['vault']['resources'][0]['backup_id']}")["backup"]["task_id"])
    admin.post("/iam/users", {"name": "host-bo", "role": "backup"})
    cred = admin.post("/iam/credentials", {"user_name": "host-bo"})["credential"]
    sign_in(page, Creds(cred["access_key"], cred["secret_key"], server.admin.project_id))
    expect(page.locator("#whoami")).to_contain_text("backup")

    nav(page, "Cloud Disk Backups")
    vrow = row(page, "vault-name", "bo-vault")
    expect(vrow.get_by_role("button", name="Perform Backup")).to_be_enabled()
    expect(vrow.get_by_role("button", name="Associate Disk")).to_have_count(0)
    expect(page.get_by_role("button", name="Create Disk Backup Vault")).to_have_count(0)
    vrow.get_by_role("button", name="More ▾").click()
    expect(page.get_by_role("menuitem")).to_have_text(["View Monitoring Data", "View Backups"])
    page.keyboard.press("Escape")
    vrow.get_by_role("button", name="Perform Backup").click()
    dlg = dialog(page)
    dlg.locator("input[name=backup-name]").fill("bo-second")
    dlg.get_by_role("button", name="OK").click()
    expect(dialog(page)).to_have_count(0)
    expect(page.locator(".toast").filter(has_text="Backup of 1 disk started")).to_be_visible()

    page.get_by_role("tab", name="Backups").click()
    brow = row(page, "backup-name", "bo-first")
    expect(brow).to_contain_text("Available")
    for hidden in ("Restore Disk", "Create Disk"):
        expect(brow.get_by_role("button", name=hidden)).to_have_count(0)
    expect(page.get_by_role("button", name="Delete", exact=True)).to_have_count(0)
    brow.get_by_role("button", name="More ▾").click()
    expect(page.get_by_role("menuitem")).to_have_text(["View Details"])
    page.keyboard.press("Escape")

    page.goto(f"/console/#/vault/{vault['id']}")
    expect(page.get_by_role("button", name="Perform Backup").first).to_be_enabled()
    for hidden in ("Associate Disk", "Apply Backup Policy", "Dissociate"):
        expect(page.get_by_role("button", name=hidden)).to_have_count(0)
    nav(page, "Policies")
    expect(page.get_by_role("button", name="Create Policy")).to_have_count(0)
    nav(page, "Agents")
    expect(page.get_by_role("button", name="Create enrolment token")).to_be_enabled()
    backups = admin.get("/backups", vault_id=vault["id"])["backups"]
    assert {b["name"] for b in backups} == {"bo-first", "bo-second"}


def test_invalid_session_returns_to_sign_in(page, server):
    sign_in(page, server.admin)
    nav(page, "Tasks")
    # The page has loaded (with or without task rows: this test must not depend on earlier ones).
    expect(page.get_by_role("table", name="Tasks")).to_be_visible()
    expect(page.locator("div.pager").first).to_contain_text(re.compile(r"\d+–\d+ of \d+"))
    page.evaluate("""() => { const s = JSON.parse(sessionStorage.getItem('opencbr.session'));
                              s.token = s.token.slice(0, -4) + 'AAAA'; sessionStorage.setItem('opencbr.session', JSON.stringify(s)); }""")
    page.reload()
    expect(page.locator(".login-card")).to_contain_text("signed out")
    expect(page.locator("#ak")).to_be_visible()
    # Signing in again returns to the page the user was on.
    page.fill("#ak", server.admin.ak)
    page.fill("#sk", server.admin.sk)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Tasks")).to_be_visible()


def test_file_system_backup_browse_restore_files_and_new_file_system(page, server, tmp_path):
    client = api(server)
    src = tmp_path / "share"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "report.txt").write_text("quarterly numbers\n")
    (src / "top.txt").write_text("top level\n")
    fs = client.post("/inventory/file-systems", {"name": "share1", "path": str(src)})["file_system"]
    vault = client.post("/vaults", {"vault": {"name": "turbo-vault", "billing": {"object_type": "turbo", "size": 10},
                                              "resources": [{"id": fs["id"], "type": "OS::Sfs::Turbo"}]}})["vault"]
    cp = client.post("/checkpoints", {"checkpoint": {"vault_id": vault["id"], "parameters": {"name": "fsbk1"}}})
    backup_id = cp["checkpoint"]["vault"]["resources"][0]["backup_id"]
    task_ok(client, client.get(f"/backups/{backup_id}")["backup"]["task_id"])

    sign_in(page, server.admin)
    nav(page, "SFS Turbo Backups")
    page.get_by_role("tab", name="Backups").click()
    brow = row(page, "backup-name", "fsbk1")
    expect(brow).to_contain_text("Available")

    # Browse the backup's files, open a directory, restore one file into another directory.
    brow.get_by_role("button", name="More ▾").click()
    page.get_by_role("menuitem", name="Browse Files").click()
    dlg = dialog(page)
    expect(dlg.get_by_role("button", name="docs")).to_be_visible()
    expect(dlg).to_contain_text("top.txt")
    dlg.get_by_role("button", name="docs").click()
    expect(dlg).to_contain_text("report.txt")
    dlg.get_by_role("button", name="Restore Selected").click()
    expect(dlg.get_by_role("alert")).to_contain_text("Select at least one file")
    dlg.get_by_label("Select report.txt").check()
    dest = tmp_path / "restored"
    dest.mkdir()
    dlg.locator("input[name=destination]").fill(str(dest))
    dlg.get_by_role("button", name="Restore Selected").click()
    expect(dialog(page)).to_have_count(0)
    expect(page.locator(".toast").filter(has_text="Restoration of 1 item started")).to_be_visible()
    task = client.get("/operation-logs", operation_type="restore_files")["operation_logs"][0]
    task_ok(client, task["id"])
    assert (dest / "report.txt").read_text() == "quarterly numbers\n"

    # Guide 6.5: a new file system from the backup.
    brow.get_by_role("button", name="Create File System").click()
    dlg = dialog(page)
    dlg.locator("input[name=fs-name]").fill("share1-copy")
    dlg.locator("input[name=fs-path]").fill(str(tmp_path / "share-copy"))
    dlg.get_by_role("button", name="Create Now").click()
    expect(dialog(page)).to_have_count(0)
    task = client.get("/operation-logs", operation_type="create_fs")["operation_logs"][0]
    task_ok(client, task["id"])
    assert (tmp_path / "share-copy" / "docs" / "report.txt").read_text() == "quarterly numbers\n"
    nav(page, "Resources")
    page.get_by_role("tab", name="File Systems").click()
    expect(page.locator("tr[data-resource-name='share1-copy']")).to_contain_text("Available")


@pytest.mark.parametrize("address, heading", [
    ("#/servers/vaults", "Cloud Server Backups"), ("#/servers/backups", "Cloud Server Backups"),
    ("#/sfs-turbo/vaults", "SFS Turbo Backups"), ("#/policies", "Policies"), ("#/tasks", "Tasks"),
    ("#/resources/servers", "Resources"), ("#/monitoring", "Monitoring"), ("#/audit", "Audit"),
])
def test_every_page_renders_without_errors(page, server, address, heading):
    sign_in(page, server.admin)
    page.goto(f"/console/{address}")
    expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
    expect(page.locator("[aria-busy=true]")).to_have_count(0)
    expect(page.locator(".alert.error")).to_have_count(0)


def test_vault_associate_expand_dissociate_delete(page, server, tmp_path):
    client = api(server)
    img = make_image(tmp_path / "data3.img", size=2 * MiB, seed=5)
    client.post("/inventory/disks", {"name": "data3", "path": img})
    vault = client.post("/vaults", {"vault": {"name": "life-vault", "billing": {"object_type": "disk", "size": 10}}})["vault"]
    sign_in(page, server.admin)
    nav(page, "Cloud Disk Backups")
    vrow = row(page, "vault-name", "life-vault")
    expect(vrow).to_contain_text("0 B / 10 GB")

    vrow.get_by_role("button", name="Associate Disk").click()
    dlg = dialog(page)
    dlg.get_by_label("Select data3").check()
    dlg.get_by_role("button", name="OK").click()
    expect(dialog(page)).to_have_count(0)
    expect(vrow.get_by_role("link", name="1", exact=True)).to_be_visible()

    vrow.get_by_role("button", name="More ▾").click()
    page.get_by_role("menuitem", name="Expand Capacity").click()
    dlg = dialog(page)
    dlg.locator("input[name=add]").fill("5")
    expect(dlg).to_contain_text("New capacity: 15 GB")
    dlg.get_by_role("button", name="Submit").click()
    expect(vrow).to_contain_text("/ 15 GB")
    assert client.get(f"/vaults/{vault['id']}")["vault"]["billing"]["size"] == 15

    # Vault details: dissociate the disk.
    vrow.get_by_role("link", name="life-vault").click()
    rrow = page.locator("tr").filter(has_text="data3")
    rrow.get_by_role("button", name="Dissociate").click()
    expect(dialog(page)).to_contain_text("Dissociate disk data3 from vault life-vault?")
    dialog(page).get_by_role("button", name="Yes").click()
    expect(page.get_by_text("No disks associated")).to_be_visible()

    # Delete the vault from its details page; back on the list it goes away.
    page.get_by_role("button", name="More ▾").click()
    page.get_by_role("menuitem", name="Delete").click()
    expect(dialog(page)).to_contain_text("Are you sure you want to delete vault life-vault?")
    dialog(page).get_by_role("button", name="Yes").click()
    expect(page).to_have_url(re.compile(r"#/disks/vaults$"))
    expect(row(page, "vault-name", "life-vault")).to_have_count(0, timeout=60_000)


@pytest.mark.parametrize("times, weekdays, every, tz", [
    (["02:00", "14:00"], "MO,WE", None, "UTC+01:00"),
    (["00:30", "23:00"], "MO,SU", None, "UTC+08:00"),
    (["01:00", "22:00"], None, 3, "UTC-05:00"),
    (["00:00"], "MO,TU,WE,TH,FR,SA,SU", None, "UTC+05:30"),
    (["23:45"], "SA", None, "UTC-09:30"),
])
def test_console_converts_local_times_like_the_cli(page, server, times, weekdays, every, tz):
    """Guide 5.2: execution times are the client's local times; the console's UTC patterns (and their
    reading back) agree with the CLI's."""
    from opencbr.cli.policies import _WEEKDAYS, _offset_minutes, local_patterns

    page.goto("/console/")
    days = [_WEEKDAYS.index(d) for d in weekdays.split(",")] if weekdays else None
    out = page.evaluate("""async ([times, weekdays, every, offset]) => {
        const s = await import('/console/js/schedule.js');
        const p = s.localToUtcPatterns({ times, weekdays, every, offset });
        return { patterns: p, back: s.utcPatternsToLocal(p, offset) };
    }""", [times, days, every, _offset_minutes(tz)])
    assert out["patterns"] == local_patterns(times, weekdays, every, tz)
    assert out["back"]["times"] == sorted(times)
    if weekdays:
        assert out["back"] == {"mode": "week", "days": sorted(days), "times": sorted(times)}
    else:
        assert out["back"] == {"mode": "days", "every": every, "times": sorted(times)}


# ------------------------------------------------------------------------------------------------ layout
LAYOUT_PAGES = [("#/disks/vaults", "Cloud Disk Backups", "disk-vaults"), ("#/disks/backups", "Cloud Disk Backups",
                 "disk-backups"), ("#/servers/vaults", "Cloud Server Backups", "server-vaults"),
                ("#/servers/backups", "Cloud Server Backups", "server-backups"), ("#/policies", "Policies", "policies"),
                ("#/tasks", "Tasks", "tasks"), ("#/resources/disks", "Resources", "resources-disks"),
                ("#/monitoring", "Monitoring", "monitoring")]


@pytest.fixture(scope="module")
def populated(server, tmp_path_factory):
    """A server with two disks in a server vault and a disk in a disk vault, each backed up once, and a
    policy: every main table has rows with long names and ids."""
    client = api(server)
    d = tmp_path_factory.mktemp("layout")
    ids = {}
    for name in ("layout-system-disk", "layout-data-disk", "layout-lonely-disk"):
        ids[name] = client.post("/inventory/disks", {"name": name, "path": make_image(d / f"{name}.img", MiB)})["disk"]["id"]
    srv = client.post("/inventory/servers", {"name": "layout-web-server-01", "system_disk": ids["layout-system-disk"],
                                             "data_disks": [ids["layout-data-disk"]]})["server"]
    for vname, otype, rid, rtype in (("layout-servers-vault", "server", srv["id"], "OS::Nova::Server"),
                                     ("layout-disks-vault", "disk", ids["layout-lonely-disk"], "OS::Cinder::Volume")):
        vault = client.post("/vaults", {"vault": {"name": vname, "billing": {
            "object_type": otype, "protect_type": "backup", "consistent_level": "crash_consistent", "size": 20},
            "resources": [{"id": rid, "type": rtype}]}})["vault"]
        cp = client.post("/checkpoints", {"checkpoint": {"vault_id": vault["id"], "parameters": {}}})["checkpoint"]
        for r in cp["vault"]["resources"]:
            task_ok(client, client.get(f"/backups/{r['backup_id']}")["backup"]["task_id"])
    client.post("/policies", {"policy": {"name": "layout-nightly-policy", "operation_type": "backup", "trigger": {
        "properties": {"pattern": ["FREQ=DAILY;INTERVAL=1;BYHOUR=2;BYMINUTE=00"]}},
        "operation_definition": {"max_backups": 7}}})
    return srv


@pytest.mark.parametrize("width", [1400, 820])
def test_main_tables_fit_the_window(browser, server, populated, tmp_path, width):
    """Screenshots at 1400 and 820 px; no main table scrolls sideways (which hides its last columns), and
    the page itself does not either. At 820 px the tables collapse into one card per row."""
    ctx = browser.new_context(viewport={"width": width, "height": 900}, timezone_id=ZONE, base_url=server.url)
    pg = ctx.new_page()
    pg.set_default_timeout(T)
    try:
        sign_in(pg, server.admin)
        for address, heading, name in LAYOUT_PAGES:
            pg.goto(f"/console/{address}")
            expect(pg.get_by_role("heading", name=heading, exact=True)).to_be_visible()
            expect(pg.locator("[aria-busy=true]")).to_have_count(0)
            if "backups" in address or "vaults" in address:
                expect(pg.locator("tbody tr[data-status], tbody tr[data-vault-name]").first).to_be_visible()
            pg.screenshot(path=str(tmp_path / f"{name}-{width}.png"), full_page=True)
            overflowing = pg.evaluate("""() => [...document.querySelectorAll('.table-wrap')]
                .filter((w) => w.scrollWidth > w.clientWidth + 1)
                .map((w) => `${(w.querySelector('caption') || {}).textContent || 'table'}: ${w.scrollWidth} > ${w.clientWidth}`)""")
            assert not overflowing, f"{address} at {width} px: {overflowing} (see {tmp_path})"
            page_width = pg.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
            assert page_width[0] <= page_width[1], f"{address} at {width} px scrolls sideways: {page_width}"
        pg.goto("/console/#/disks/backups")
        op = pg.locator("tbody tr[data-status]").first.get_by_role("button", name="More ▾")
        expect(op).to_be_visible()
        box, view = op.bounding_box(), pg.viewport_size
        assert box["x"] + box["width"] <= view["width"], box
    finally:
        ctx.close()
    print(f"screenshots at {width} px: {tmp_path}")


def test_protection_through_a_server_and_readable_metric_labels(page, server, populated):
    sign_in(page, server.admin)
    page.goto("/console/#/resources/disks")
    disk = page.locator("tr[data-resource-name='layout-system-disk']")
    expect(disk).to_contain_text("layout-servers-vault")
    expect(disk).to_contain_text("through its server")
    expect(disk).not_to_contain_text("Not protected")
    page.goto("/console/#/monitoring")
    expect(page.get_by_text("Used capacity", exact=True)).to_be_visible()
    expect(page.locator(".main")).not_to_contain_text("used_vault_size")
    expect(page.locator(".main")).not_to_contain_text("(vault_util)")
