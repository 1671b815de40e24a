"""The role table (README "Roles"), route by route: what a read-only user, a member and an admin may do.

Read-only users list and show the catalog; reading what is inside a backup (export, browsing its files)
or making the service re-read it (verify) needs the member role; administration needs admin. Every
route of the API is in the table (checked against the OpenAPI description), so a new route cannot be
added without deciding who may call it."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.support.clients import api, fill_ids, signed, task_ok
from tests.support.server import Creds

READ, MEMBER, ADMIN, OPERATOR = "readonly", "member", "admin", "operator"
LEVEL = {READ: 0, MEMBER: 1, ADMIN: 2, OPERATOR: 3}
POLICY = {"name": "roles-policy", "operation_type": "backup", "enabled": False,
          "operation_definition": {"max_backups": 3},
          "trigger": {"properties": {"pattern": ["FREQ=WEEKLY;BYDAY=MO;BYHOUR=03;BYMINUTE=00"]}}}

# (method, path template, body, the least role that may call it)
ROUTES = [
    ("GET", "/vaults", None, READ),
    ("POST", "/vaults", {"vault": {"billing": {"object_type": "disk", "size": 10}}}, MEMBER),
    ("GET", "/vaults/summary", None, READ),
    ("GET", "/vaults/{vault}", None, READ),
    ("PUT", "/vaults/{vault}", {"vault": {"name": "renamed"}}, MEMBER),
    ("DELETE", "/vaults/{vault}", None, MEMBER),
    ("POST", "/vaults/{vault}/addresources", {"resources": [{"id": "{disk}", "type": "OS::Cinder::Volume"}]}, MEMBER),
    ("POST", "/vaults/{vault}/removeresources", {"resource_ids": ["{disk}"]}, MEMBER),
    ("POST", "/vaults/{vault}/associatepolicy", {"policy_id": "{policy}"}, MEMBER),
    ("POST", "/vaults/{vault}/dissociatepolicy", {"policy_id": "{policy}"}, MEMBER),
    ("POST", "/vaults/{vault}/rebuild", None, ADMIN),
    ("GET", "/stored-vaults", None, OPERATOR),
    ("POST", "/checkpoints", {"checkpoint": {"vault_id": "{vault}"}}, MEMBER),
    ("GET", "/checkpoints/{checkpoint}", None, READ),
    ("GET", "/backups", None, READ),
    ("GET", "/backups/{backup}", None, READ),
    ("PUT", "/backups/{backup}", {"backup": {"name": "renamed"}}, MEMBER),
    ("DELETE", "/backups/{backup}", None, MEMBER),
    ("POST", "/backups/{backup}/restore", {"restore": {"volume_id": "{disk}"}}, MEMBER),
    ("GET", "/backups/{backup}/metadata", None, READ),
    ("POST", "/backups/{backup}/verify", None, MEMBER),
    ("POST", "/backups/{backup}/create-disk", {"name": "roles-new", "path": "/tmp/roles-new.img"}, MEMBER),
    ("GET", "/backups/{backup}/export", None, MEMBER),
    ("POST", "/backups/{backup}/create-file-system", {"name": "roles-fs", "path": "/tmp/roles-fs"}, MEMBER),
    ("GET", "/backups/{backup}/files", None, MEMBER),
    ("POST", "/backups/{backup}/restore-files", {"paths": ["/a"], "destination_path": "/tmp/roles-dst"}, MEMBER),
    ("GET", "/storage_usage", None, READ),
    # a vault's verify and restore-test policies (docs/verification.md)
    ("GET", "/vaults/{vault}/checks", None, READ),
    ("GET", "/vaults/{vault}/checks/verify", None, READ),
    ("PUT", "/vaults/{vault}/checks/verify", {"check": {"interval_days": 7}}, MEMBER),
    ("DELETE", "/vaults/{vault}/checks/verify", None, MEMBER),
    ("POST", "/vaults/{vault}/checks/verify/run", None, MEMBER),
    # sharing (docs/sharing.md): the sharer adds and removes members; the recipient updates its own
    ("POST", "/backups/{backup}/members", {"members": ["no-such-project"]}, MEMBER),
    ("GET", "/backups/{backup}/members", None, READ),
    ("GET", "/backups/{backup}/members/no-such-member", None, READ),
    ("PUT", "/backups/{backup}/members/no-such-member", {"status": "rejected"}, MEMBER),
    ("DELETE", "/backups/{backup}/members/no-such-member", None, MEMBER),
    ("GET", "/protectables/OS::Cinder::Volume/instances", None, READ),
    ("GET", "/protectables/OS::Cinder::Volume/instances/{disk}", None, READ),
    ("POST", "/inventory/disks", {"name": "roles-d2", "path": "{img}"}, MEMBER),
    ("POST", "/inventory/servers", {"name": "roles-s", "system_disk": "{disk}"}, MEMBER),
    ("POST", "/inventory/file-systems", {"name": "roles-fs2", "path": "{dir}"}, MEMBER),
    ("GET", "/inventory/disks", None, READ),
    ("GET", "/inventory/disks/{disk}", None, READ),
    ("PUT", "/inventory/servers/{disk}", {"status": "stopped"}, MEMBER),
    ("DELETE", "/inventory/disks/{disk}", None, MEMBER),
    ("GET", "/operation-logs", None, READ),
    ("GET", "/operation-logs/{task}", None, READ),
    ("POST", "/operation-logs/{task}/cancel", None, MEMBER),
    ("GET", "/policies", None, READ),
    ("POST", "/policies", {"policy": POLICY}, MEMBER),
    ("GET", "/policies/{policy}", None, READ),
    ("PUT", "/policies/{policy}", {"policy": {"name": "renamed"}}, MEMBER),
    ("DELETE", "/policies/{policy}", None, MEMBER),
    ("GET", "/policies/{policy}/preview", None, READ),
    ("GET", "/policies/{policy}/executions", None, READ),
    ("GET", "/policies/{policy}/retention-preview", None, READ),
    ("POST", "/policies/{policy}/prune", {"vault_id": "{vault}"}, MEMBER),
    # tags, the rest of the vault API, and what a self-hosted installation refuses to anyone (400)
    ("POST", "/vault/{vault}/tags", {"tag": {"key": "k", "value": "v"}}, MEMBER),
    ("GET", "/vault/{vault}/tags", None, READ),
    ("DELETE", "/vault/{vault}/tags/k", None, MEMBER),
    ("POST", "/vault/{vault}/tags/action", {"action": "create", "tags": [{"key": "k", "value": "v"}]}, MEMBER),
    ("GET", "/vault/tags", None, READ),
    ("POST", "/vault/resource_instances/action", {"action": "count"}, READ),
    ("GET", "/inventory/disks/{disk}/tags", None, READ),
    ("PUT", "/inventory/disks/{disk}/tags", {"tags": [{"key": "k", "value": "v"}]}, MEMBER),
    ("PUT", "/vaults/batch-update", {"vault": {"threshold": 70}}, MEMBER),
    ("GET", "/vaults/external", None, READ),
    ("POST", "/vaults/order", {"vault": {"billing": {"object_type": "disk", "size": 10}}}, MEMBER),
    ("PUT", "/vaults/{vault}/set-resources", {"resource_ids": ["{disk}"], "action": "suspend"}, MEMBER),
    ("PUT", "/vaults/{vault}/update-backup-expiration-time", {"expect_expiration_date": "2099-01-01"}, MEMBER),
    ("GET", "/cbr-features", None, READ),
    ("GET", "/cbr-features/replication.enable", None, READ),
    ("POST", "/vaults/change-charge-mode", {}, READ),
    ("POST", "/orders/change", {}, READ),
    ("PUT", "/orders/none", {}, READ),
    ("POST", "/backups/sync", {}, READ),
    ("POST", "/checkpoints/sync", {}, READ),
    ("GET", "/iam/whoami", None, READ),
    ("POST", "/iam/accounts", {"name": "roles-acct"}, OPERATOR),
    ("POST", "/iam/projects", {"name": "roles-proj"}, ADMIN),
    ("GET", "/iam/projects", None, READ),
    ("POST", "/iam/users", {"name": "roles-u"}, ADMIN),
    ("GET", "/iam/users", None, ADMIN),
    ("POST", "/iam/credentials", {"user_name": "{admin_user}"}, ADMIN),
    ("DELETE", "/iam/credentials/{admin_ak}", None, ADMIN),
    ("GET", "/iam/audit-events", None, ADMIN),
    ("PUT", "/iam/tracker", {"enabled": True}, ADMIN),
    ("GET", "/agents", None, READ),
    ("POST", "/agents", {"agent": {"agent_id": "roles-agent", "host_name": "h", "host_ip": "10.0.0.1",
                                   "host_os": "Linux"}}, MEMBER),
    ("GET", "/agents/install-command", None, READ),
    ("POST", "/agents/tokens", None, MEMBER),
    ("POST", "/agents/enrol", None, READ),  # unsigned: a token's proof authenticates it
    ("GET", "/agents/roles-agent", None, READ),
    ("PUT", "/agents/roles-agent", {"agent": {"status": "uninstall"}}, MEMBER),
    ("DELETE", "/agents/roles-agent", None, MEMBER),
    ("POST", "/agents/roles-agent/add-path", {"add_path": ["/srv"]}, MEMBER),
    ("POST", "/agents/roles-agent/remove-path", {"remove_path": ["/srv"]}, MEMBER),
    ("POST", "/agent/check", {"agent_status": [{"resource_id": "{disk}", "resource_type": "OS::Cinder::Volume"}]},
     READ),
    # cross-region replication (docs/replication.md): tenants replicate; the operator links regions
    ("GET", "/replication-capabilities", None, READ),
    ("POST", "/backups/{backup}/replicate", {"replicate": {"destination_project_id": "p", "destination_region": "r",
                                                           "destination_vault_id": "v"}}, MEMBER),
    ("POST", "/checkpoints/replicate", {"replicate": {"vault_id": "{vault}", "destination_project_id": "p",
                                                      "destination_region": "r", "destination_vault_id": "v"}}, MEMBER),
    ("GET", "/regions", None, OPERATOR),
    ("POST", "/regions", {"name": "r", "endpoint": "127.0.0.1:1", "credential": "x"}, OPERATOR),
    ("DELETE", "/regions/r", None, OPERATOR),
    ("POST", "/regions/credentials", {"name": "r"}, OPERATOR),
    ("DELETE", "/regions/credentials/c", None, OPERATOR),
    # organization policies (docs/organization-policies.md): the operator deploys; tenants read those of their account
    ("GET", "/organization-policies", None, READ),
    ("POST", "/organization-policies", {"policy": {"name": "roles-org"}}, OPERATOR),
    ("GET", "/organization-policies/none", None, READ),
    ("PUT", "/organization-policies/none", {"policy": {"name": "renamed"}}, OPERATOR),
    ("DELETE", "/organization-policies/none", None, OPERATOR),
    ("GET", "/organization-policies/none/policy-detail", None, READ),
    # quotas (docs/quotas.md): tenants see theirs, the operator sets them; moving resources between vaults
    ("GET", "/quotas", None, READ),
    ("GET", "/admin/quotas/{vault}", None, OPERATOR),
    ("PUT", "/admin/quotas/{vault}", {"quotas": {"vault": 1}}, OPERATOR),
    ("DELETE", "/admin/quotas/{vault}", None, OPERATOR),
    ("POST", "/vaults/{vault}/migrateresources", {"destination_vault_id": "{vault}", "resource_ids": ["{disk}"]},
     MEMBER),
    # images (docs/images.md)
    ("GET", "/images", None, READ),
    ("POST", "/images", {"image": {"backup_id": "{backup}", "name": "roles-image"}}, MEMBER),
    ("GET", "/images/no-such-image", None, READ),
    ("DELETE", "/images/no-such-image", None, MEMBER),
    ("POST", "/images/no-such-image/servers", {"server": {"name": "roles-srv", "directory": "/tmp"}}, MEMBER),
    # vault locks (docs/vault-lock.md): administrators lock; the operator grants the governor permission
    ("GET", "/vaults/{vault}/lock", None, READ),
    ("PUT", "/vaults/{vault}/lock", {"lock": {"mode": "governance", "retention_days": 1, "lock_days": 1}}, ADMIN),
    ("DELETE", "/vaults/{vault}/lock", None, ADMIN),
    ("PUT", "/admin/vault-lock-governors/no-such-user", {"granted": True}, OPERATOR),
    # metrics and alarms (docs/monitoring.md): anyone reads the series; admins manage the project's targets,
    # the operator those for all projects
    ("GET", "/vaults/{vault}/metrics", None, READ),
    ("GET", "/alarm-targets", None, ADMIN),
    ("POST", "/alarm-targets", {"alarm_target": {"kind": "webhook", "address": "http://127.0.0.1:9/roles"}}, ADMIN),
    ("DELETE", "/alarm-targets/no-such-target", None, ADMIN),
    ("GET", "/alarm-deliveries", None, ADMIN),
    ("GET", "/admin/alarm-targets", None, OPERATOR),
    ("POST", "/admin/alarm-targets", {"alarm_target": {"kind": "webhook", "address": "http://127.0.0.1:9/r"}}, OPERATOR),
    ("DELETE", "/admin/alarm-targets/no-such-target", None, OPERATOR),
]

#: The backup-only role (docs/roles.md) may call the routes anybody may (catalog reads: least READ) and
#: these; every other route refuses it with 403. A new route is refused to it unless added here.
BACKUP = "backup"
BACKUP_MAY = {("POST", "/checkpoints"), ("POST", "/agents/tokens"), ("POST", "/agents")}


@pytest.fixture(scope="module")
def tenant(server, tmp_path_factory):
    """A tenant (not the operator) with a vault, a disk, a backup, a policy; and a user of each role."""
    d = tmp_path_factory.mktemp("roles")
    op = api(server)
    acct = op.post("/iam/accounts", {"name": f"roles-{server.backend}"})
    admin_creds = Creds(acct["credential"]["access_key"], acct["credential"]["secret_key"], acct["project"]["id"])
    admin = api(server, admin_creds)
    img, extra = d / "disk.img", d / "extra.img"
    img.write_bytes(b"roles" * 100_000)
    extra.write_bytes(b"\0" * 65536)
    (d / "fs").mkdir()
    disk = admin.post("/inventory/disks", {"name": "roles-disk", "path": str(img)})["disk"]
    vault = admin.post("/vaults", {"vault": {"billing": {"object_type": "disk", "size": 10}, "resources": [
        {"id": disk["id"], "type": "OS::Cinder::Volume"}]}})["vault"]
    cp = admin.post("/checkpoints", {"checkpoint": {"vault_id": vault["id"]}})["checkpoint"]
    backup_id = cp["vault"]["resources"][0]["backup_id"]
    task = admin.get(f"/backups/{backup_id}")["backup"]["task_id"]
    task_ok(admin, task)
    policy = admin.post("/policies", {"policy": POLICY})["policy"]
    users = {}
    for role in (READ, MEMBER, BACKUP):
        admin.post("/iam/users", {"name": f"roles-{role}", "role": role})
        c = admin.post("/iam/credentials", {"user_name": f"roles-{role}"})["credential"]
        users[role] = api(server, Creds(c["access_key"], c["secret_key"], admin_creds.project_id))
    users[ADMIN] = admin
    ids = {"vault": vault["id"], "disk": disk["id"], "backup": backup_id, "checkpoint": cp["id"], "task": task,
           "policy": policy["id"], "img": str(extra), "dir": str(d / "fs"), "admin_user": acct["user"]["name"],
           "admin_ak": admin_creds.ak}
    return users, ids


def test_every_route_is_in_the_table(server, tenant):
    """A route missing here has no decided role."""
    _, ids = tenant
    spec = httpx.get(server.url + "/openapi.json", trust_env=False).json()
    prefix = "/v3/{project_id}"
    table = [(m, fill_ids(p, ids)) for m, p, _, _ in ROUTES]
    missing = []
    for path, ops in spec["paths"].items():
        if not path.startswith(prefix):
            continue
        pattern = re.compile(re.sub(r"\\{[a-z_]+\\}", "[^/]+", re.escape(path[len(prefix):])) + "$")
        missing += [(m.upper(), path) for m in ops if not any(tm == m.upper() and pattern.match(tp) for tm, tp in table)]
    assert not missing, f"routes without a role in the table: {missing}"


@pytest.mark.parametrize("method,path,body,least", ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_role_table(server, tenant, method, path, body, least):
    """Below the least role: 403 with the CBR error body, and nothing done. At or above it (for the
    reads, which change nothing): not refused."""
    users, ids = tenant
    url, body = fill_ids(path, ids), fill_ids(body, ids)
    for role in (READ, MEMBER, ADMIN):
        if LEVEL[role] >= LEVEL[least] and method != "GET":
            continue  # writes are exercised by their own tests; here only who is refused
        r = signed(users[role], method, url, body=body)
        if LEVEL[role] < LEVEL[least]:
            assert r.status_code == 403, (role, r.status_code, r.text[:300])
            assert r.json()["error_code"].startswith("APIGW.03") and r.json()["error_msg"]
        else:
            # allowed: whatever the answer (a disk backup without partitions has no files to list), not 403
            assert r.status_code != 403 and r.status_code < 500, (role, r.status_code, r.text[:300])


def test_refusals_change_nothing(server, tenant):
    """After every refused request of the table the tenant's objects are all still there and unchanged."""
    users, ids = tenant
    admin = users[ADMIN]
    assert admin.get(f"/vaults/{ids['vault']}")["vault"]["name"] != "renamed"
    assert admin.get(f"/backups/{ids['backup']}")["backup"]["status"] == "available"
    assert admin.get(f"/inventory/disks/{ids['disk']}")["resource"]["id"] == ids["disk"]
    assert admin.get(f"/policies/{ids['policy']}")["policy"]["name"] == POLICY["name"]


#: The role decides in the service, whatever the catalog: the backup-only tests run on SQLite only (time budget).
ON_SQLITE = pytest.mark.parametrize("server", ["sqlite"], indirect=True)


@ON_SQLITE
@pytest.mark.parametrize("method,path,body,least", ROUTES, ids=[f"{m} {p}" for m, p, _, _ in ROUTES])
def test_backup_only_role_table(server, tenant, method, path, body, least):
    """The backup-only role, route by route: refused with 403 and the CBR error body on every route that
    deletes, restores, exports, browses, changes retention, policies or anything else; the reads of the
    catalog answer it."""
    users, ids = tenant
    if (method, path) in BACKUP_MAY:
        return  # exercised below, with what they make
    r = signed(users[BACKUP], method, fill_ids(path, ids), body=fill_ids(body, ids))
    if least == READ:
        assert r.status_code != 403 and r.status_code < 500, (r.status_code, r.text[:300])
    else:
        assert r.status_code == 403, (r.status_code, r.text[:300])
        assert r.json()["error_code"].startswith("APIGW.03") and r.json()["error_msg"]


@ON_SQLITE
def test_backup_only_role_makes_backups_and_enrols_agents(server, tenant):
    """What the role is for: a backup it starts runs and it sees it; it makes an enrolment token and
    registers an agent (an agent's host holds this role's credential, docs/roles.md); it cannot pick when
    its backup expires."""
    users, ids = tenant
    bot = users[BACKUP]
    cp = bot.post("/checkpoints", {"checkpoint": {"vault_id": ids["vault"]}})["checkpoint"]
    backup_id = cp["vault"]["resources"][0]["backup_id"]
    task_ok(bot, bot.get(f"/backups/{backup_id}")["backup"]["task_id"])
    assert bot.get(f"/backups/{backup_id}")["backup"]["status"] == "available"
    assert bot.post("/agents/tokens", None)["token"].startswith("ocbr1.")
    agent = {"agent": {"agent_id": "roles-bot-agent", "host_name": "h", "host_ip": "10.0.0.2", "host_os": "Linux"}}
    assert signed(bot, "POST", "/agents", body=agent).status_code == 200
    r = signed(bot, "POST", "/checkpoints", body={"checkpoint": {"vault_id": ids["vault"],
                                                                 "parameters": {"retention_duration_days": 1}}})
    assert r.status_code == 403 and r.json()["error_code"] == "APIGW.0303"
    r = signed(bot, "DELETE", f"/backups/{backup_id}")
    assert r.status_code == 403 and r.json()["error_code"] == "APIGW.0303"
