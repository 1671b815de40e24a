"""Agents in the catalog: the installation's CA, enrolment with a token, paths, and an agent's inventory
as protectable resources (services.agents)."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import select

from opencbr import __version__ as VERSION
from opencbr.agentlink import certs
from opencbr.catalog.models import AgentAuthority, Resource
from opencbr.domain import resource as R
from opencbr.domain.errors import CBRError, Forbidden, InvalidParameter, NotFound, Unauthorized
from opencbr.services import agents, iam, resources
from opencbr.services.agents import inventory
from opencbr.services.context import open_context
from opencbr.services.principal import Principal

HOST = {"host_name": "web1", "host_ip": "10.0.0.5", "host_os": "Linux 6.1"}


def _enrol_request(token: str, agent_id: str, *, csr: str | None = None) -> tuple[dict, str]:
    _, project_id, token_id, secret, _ = token.split(".")
    body = {"token_id": token_id, "agent": {"agent_id": agent_id, **HOST, "agent_version": VERSION},
            "endpoint": "127.0.0.1:7443", "csr": csr or certs.new_key_and_csr(agent_id)[1]}
    body["proof"] = agents.proof(secret, body)
    return body, secret


def _enrolled(ctx, tenant, agent_id="agent-1"):
    with ctx.tx() as s:
        token = agents.create_token(s, ctx, tenant).token
    body, _ = _enrol_request(token, agent_id)
    with ctx.tx() as s:
        return agents.enrol(s, ctx, tenant.project_id, body)


def test_authority_is_created_once_and_shared(ctx, tmp_path):
    """Two contexts (as two processes) creating the CA at once end with one, and both use it."""
    other = open_context(ctx.settings)
    got, errors = [], []

    def make(c):
        try:
            got.append(agents.service_identity(c))
        except Exception as e:  # pragma: no cover - the assertion shows it
            errors.append(e)

    threads = [threading.Thread(target=make, args=(c,)) for c in (ctx, other)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    other.close()
    assert not errors and got[0] == got[1]
    with ctx.read() as s:
        assert len(s.scalars(select(AgentAuthority)).all()) == 1
        row = s.get(AgentAuthority, 1)
    assert "PRIVATE KEY" not in row.ca_key_sealed and "PRIVATE KEY" not in row.service_key_sealed
    assert certs.common_name(got[0].service_cert) == "opencbr-service"


def test_enrol_with_token(ctx, tenant):
    e = _enrolled(ctx, tenant)
    assert certs.common_name(e.certificate) == "agent-1"
    with ctx.read() as s:
        view = agents.show_agent(s, ctx, tenant, "agent-1")
    assert view.agent.cert_fingerprint == certs.fingerprint(e.certificate)
    assert view.status == "offline"  # enrolled, not polled yet
    assert view.agent.endpoint == "127.0.0.1:7443"


def test_enrol_refuses_forged_reused_and_expired_tokens(ctx, tenant, clock):
    with ctx.tx() as s:
        token = agents.create_token(s, ctx, tenant).token
    body, _ = _enrol_request(token, "a-forged")
    forged = {**body, "endpoint": "10.9.9.9:7443"}  # changed after the proof was made
    with pytest.raises(Unauthorized, match="proof"), ctx.tx() as s:
        agents.enrol(s, ctx, tenant.project_id, forged)
    with pytest.raises(Unauthorized, match="unknown"), ctx.tx() as s:
        agents.enrol(s, ctx, "0" * 32, body)  # another project's path
    with ctx.tx() as s:
        agents.enrol(s, ctx, tenant.project_id, body)
    again, _ = _enrol_request(token, "a-second")
    with pytest.raises(Unauthorized, match="already used"), ctx.tx() as s:
        agents.enrol(s, ctx, tenant.project_id, again)
    with ctx.tx() as s:
        late = agents.create_token(s, ctx, tenant).token
    clock.advance(hours=1, seconds=1)
    body, _ = _enrol_request(late, "a-late")
    with pytest.raises(Unauthorized, match="expired"), ctx.tx() as s:
        agents.enrol(s, ctx, tenant.project_id, body)


def test_readonly_cannot_change(ctx, tenant):
    user = iam.create_user(ctx, tenant, "viewer", "readonly")
    ro = Principal(tenant.account_id, tenant.project_id, user.id, "viewer", "readonly")
    with pytest.raises(Forbidden), ctx.tx() as s:
        agents.create_token(s, ctx, ro)
    with pytest.raises(Forbidden), ctx.tx() as s:
        agents.register_agent(s, ctx, ro, {"agent_id": "x", **HOST})
    with ctx.read() as s:
        assert agents.list_agents(s, ctx, ro) == ([], 0)


INVENTORY = {
    "host": {"host_name": "web1", "host_os": "Linux 6.1", "host_ip": "10.0.0.5"},
    "version": VERSION,  # (this service's agent: not old)
    "block_devices": [
        {"path": "/dev/sda", "kind": "disk", "size": 8 << 30, "name": "sda", "parent": None},
        {"path": "/dev/sda1", "kind": "part", "size": 1 << 30, "name": "sda1", "parent": "sda", "mountpoint": "/boot"},
        {"path": "/dev/sda2", "kind": "part", "size": 7 << 30, "name": "sda2", "parent": "sda", "fstype": "LVM2_member"},
        {"path": "/dev/vg0/root", "kind": "lvm", "size": 4 << 30, "name": "vg0-root", "parent": "sda2",
         "mountpoint": "/", "vg": "vg0", "lv": "root"},
        {"path": "/dev/sdb", "kind": "disk", "size": 2 << 30, "name": "sdb", "parent": None},
        {"path": "/srv/images/a.img", "kind": "image", "size": 1 << 20, "name": "a.img"},
    ],
    "paths": [{"dir_path": "/srv/www", "exists": True, "size_estimate": 12345}],
}


def _answer(ctx, agent_id, answer):
    with ctx.tx() as s:
        agent = s.get(agents.registry.Agent, agent_id)
        agent.last_active_time = ctx.now()
        inventory.apply(s, ctx, agent, answer)


def test_inventory_becomes_resources(ctx, tenant):
    _enrolled(ctx, tenant)
    with ctx.tx() as s:
        assert agents.add_agent_path(s, ctx, tenant, "agent-1", ["/srv/www/", "/srv/www"]) == (["/srv/www"], [])
    _answer(ctx, "agent-1", INVENTORY)
    with ctx.read() as s:
        rows = {r.path: r for r in s.scalars(select(Resource).where(Resource.agent_id == "agent-1"))}
        server = rows[""]
        assert server.type == R.SERVER and server.status == "running" and server.provider == "agent"
        assert set(rows) == {"", "/dev/sda", "/dev/vg0/root", "/dev/sdb", "/srv/images/a.img", "/srv/www"}
        disks = resources.server_disks(s, server.id)
        assert [d.path for d in disks][0] == "/dev/vg0/root" and disks[0].disk_role == "system"
        assert {d.path for d in disks} == {"/dev/sda", "/dev/vg0/root", "/dev/sdb"}
        assert rows["/srv/images/a.img"].server_id is None
        assert rows["/srv/www"].type == R.FILE_SYSTEM and rows["/srv/www"].size_bytes == 12345
        views, _ = resources.list_resources(s, tenant, rtype=R.DISK)
        assert {v.status for v in views} == {"in-use", "available"}
    gone = {**INVENTORY, "block_devices": [d for d in INVENTORY["block_devices"] if d["path"] != "/dev/sdb"]}
    _answer(ctx, "agent-1", gone)
    with ctx.read() as s:
        sdb = s.scalar(select(Resource).where(Resource.path == "/dev/sdb"))
        assert sdb.status == "error" and "no longer on host web1 or not allowed by the agent's --device patterns" \
            in sdb.status_reason and sdb.server_id is None


def test_offline_agent_resources_say_so(ctx, tenant, clock):
    _enrolled(ctx, tenant)
    _answer(ctx, "agent-1", INVENTORY)
    with ctx.read() as s:
        disk = s.scalar(select(Resource).where(Resource.path == "/dev/sdb"))
        assert agents.require_online(s, ctx, disk).endpoint == "127.0.0.1:7443"
    clock.advance(seconds=agents.offline_after(ctx) + 1)
    report = agents.poll_agents(ctx, timeout=1)  # nothing listens there
    assert list(report.failed) == ["agent-1"]
    with ctx.read() as s:
        disk = s.get(Resource, disk.id)
        assert disk.status == "error" and "is offline" in disk.status_reason
        with pytest.raises(CBRError, match="is offline") as e:
            agents.require_online(s, ctx, disk)
        assert e.value.code == agents.AGENT_OFFLINE
        assert agents.show_agent(s, ctx, tenant, "agent-1").status == "offline"
        check = agents.check_agent(s, ctx, tenant, [{"resource_id": disk.id}])[0]
        assert check["installed"] is False and "offline" in check["message"]


def test_paths_are_checked_and_removed(ctx, tenant):
    _enrolled(ctx, tenant)
    with ctx.tx() as s:
        with pytest.raises(InvalidParameter, match="absolute"):
            agents.add_agent_path(s, ctx, tenant, "agent-1", ["srv/www"])
        agents.add_agent_path(s, ctx, tenant, "agent-1", ["/srv/www", "/data"],
                              [{"path_name": "/srv/www", "exclude_path_name": ["/srv/www/cache/"]}])
    with ctx.tx() as s:
        assert agents.add_agent_path(s, ctx, tenant, "agent-1", ["/data"]) == ([], ["/data"])
        fs = s.scalar(select(Resource).where(Resource.path == "/srv/www"))
        assert agents.exclude_paths(s, fs) == ["/srv/www/cache"]
    with ctx.tx() as s:
        assert agents.remove_agent_path(s, ctx, tenant, "agent-1", ["/data", "/nope"]) == (["/data"], ["/nope"])
        assert s.scalar(select(Resource).where(Resource.path == "/data")) is None  # no backups: gone


def test_a_path_added_again_is_the_same_file_system(ctx, tenant):
    """A removed path kept for its vault comes back as that resource when the path is added again (it
    was a second one of the same name: the vault kept the first, in error, and its backups failed)."""
    from opencbr.services import vaults

    _enrolled(ctx, tenant)
    _enrolled(ctx, tenant, "agent-2")
    with ctx.tx() as s:
        agents.add_agent_path(s, ctx, tenant, "agent-1", ["/srv/www"])
        agents.add_agent_path(s, ctx, tenant, "agent-2", ["/srv/www"])
    _answer(ctx, "agent-1", INVENTORY)
    with ctx.tx() as s:
        fs = s.scalar(select(Resource).where(Resource.agent_id == "agent-1", Resource.path == "/srv/www"))
        vaults.create_vault(s, ctx, tenant, {"name": "www", "resources": [{"id": fs.id, "type": fs.type}],
                                             "billing": {"object_type": "turbo", "protect_type": "backup", "size": 10}})
    with ctx.tx() as s:
        agents.remove_agent_path(s, ctx, tenant, "agent-1", ["/srv/www"])
        agents.remove_agent_path(s, ctx, tenant, "agent-2", ["/srv/www"])  # (no vault: it goes)
    with ctx.read() as s:
        kept = s.get(Resource, fs.id)
        assert kept.status == "error" and "was removed from agent" in kept.status_reason and kept.agent_id is None
    with ctx.tx() as s:  # the other host's same path is not this one
        agents.add_agent_path(s, ctx, tenant, "agent-2", ["/srv/www"])
    with ctx.read() as s:
        assert s.get(Resource, fs.id).agent_id is None
    with ctx.tx() as s:
        agents.add_agent_path(s, ctx, tenant, "agent-1", ["/srv/www"])
    with ctx.read() as s:
        back = s.get(Resource, fs.id)
        assert (back.agent_id, back.status, back.status_reason) == ("agent-1", "available", "")
        assert len(s.scalars(select(Resource).where(Resource.agent_id == "agent-1",
                                                    Resource.type == R.FILE_SYSTEM)).all()) == 1


def test_unregister_revokes_at_once(ctx, tenant):
    _enrolled(ctx, tenant)
    _answer(ctx, "agent-1", INVENTORY)
    with ctx.tx() as s:
        address = agents.unregister_agent(s, ctx, tenant, "agent-1")
    assert address.agent_id == "agent-1"
    with ctx.read() as s:
        with pytest.raises(NotFound):
            agents.show_agent(s, ctx, tenant, "agent-1")
        disk = s.scalar(select(Resource).where(Resource.path == "/dev/sdb"))
        assert disk.status == "error" and "unregistered" in disk.status_reason and disk.agent_id is None
        with pytest.raises(CBRError, match="unregistered"):
            agents.address_of(s, disk)
    assert agents.poll_agents(ctx).failed == {}


def test_a_path_the_agent_refuses_says_why(ctx, tenant, tmp_path):
    """The agent's own report of a path outside its roots, or reached through a symbolic link, becomes
    the file system's status reason (it said "does not exist" for /etc and for a link to it, which
    sends the user looking for a missing directory instead of at the roots)."""
    import time

    from opencbr.agent import inventory as agent_inventory
    from opencbr.agent.confinement import Confinement

    root = tmp_path / "root"
    (root / "www").mkdir(parents=True)
    (root / "etclink").symlink_to("/etc")
    confinement = Confinement([str(root)], [])
    wanted = [str(root / "www"), str(root / "etclink"), "/etc", str(root / "gone")]
    _enrolled(ctx, tenant)
    with ctx.tx() as s:
        agents.add_agent_path(s, ctx, tenant, "agent-1", wanted)
    reports = [agent_inventory.path_report(confinement, p, [], time.monotonic() + 5) for p in wanted]
    _answer(ctx, "agent-1", {**INVENTORY, "paths": reports})
    with ctx.read() as s:
        rows = {r.path: r for r in s.scalars(select(Resource).where(Resource.type == R.FILE_SYSTEM))}
    assert rows[str(root / "www")].status == "available"
    assert "symbolic link" in rows[str(root / "etclink")].status_reason
    assert "outside this agent's roots" in rows["/etc"].status_reason
    assert rows[str(root / "gone")].status_reason == f"{root / 'gone'} does not exist on host web1"
    assert all(rows[p].status == "error" for p in wanted[1:])
    with ctx.read() as s:  # the agent's own view says it too, path by path (it listed them all available)
        shown = agents.show_agent(s, ctx, tenant, "agent-1").file_systems
    assert shown[str(root / "www")] == ("available", "")
    assert shown["/etc"][0] == "error" and "outside this agent's roots" in shown["/etc"][1]


def _roots_told(ctx, agent_id, roots):
    """As a heartbeat keeps the agent's answer (services/agents/poll.py)."""
    with ctx.tx() as s:
        agent = s.get(agents.registry.Agent, agent_id)
        agent.inventory = {**(agent.inventory or {}), "roots": roots}


def test_a_path_outside_the_roots_the_agent_told_is_refused_at_once(ctx, tenant):
    """Once the agent has said its roots, a path outside them is a 400 when it is added, instead of a
    file system that turns to error at the next heartbeat and can never be backed up (the trial's
    ``/etc``, and ``root/../../etc``, were taken and listed available until then)."""
    _enrolled(ctx, tenant)
    _roots_told(ctx, "agent-1", ["/srv/data/", "/home"])
    for outside in ("/etc", "/srv/data/../../etc", "/srv", "/srv/database", "/"):
        with ctx.tx() as s, pytest.raises(InvalidParameter, match="outside the roots of agent"):
            agents.add_agent_path(s, ctx, tenant, "agent-1", ["/srv/data/www", outside])
    with ctx.tx() as s:
        assert agents.add_agent_path(s, ctx, tenant, "agent-1", ["/srv/data/www", "/home", "/srv/data"]) == \
            (["/srv/data/www", "/home", "/srv/data"], [])
    with ctx.tx() as s, pytest.raises(InvalidParameter) as e:
        agents.add_agent_path(s, ctx, tenant, "agent-1", ["/etc"])
    # the way out keeps the agent: `opencbr-agent register --root` refuses an enrolled host, and with
    # --force enrols a new agent, which this path (added to the old one) would not follow
    assert "roots in the agent's configuration" in e.value.message and "register" not in e.value.message
    _roots_told(ctx, "agent-1", ["/"])
    with ctx.tx() as s:
        assert agents.add_agent_path(s, ctx, tenant, "agent-1", ["/etc"]) == (["/etc"], [])


def test_a_name_no_file_system_takes_is_refused(ctx, tenant):
    _enrolled(ctx, tenant)
    with ctx.tx() as s, pytest.raises(InvalidParameter, match="longer than 255 bytes"):
        agents.add_agent_path(s, ctx, tenant, "agent-1", ["/srv/" + "é" * 128])
    with ctx.tx() as s:
        assert agents.add_agent_path(s, ctx, tenant, "agent-1", ["/srv/" + "a" * 255]) == (["/srv/" + "a" * 255], [])


def test_an_image_missing_from_an_unfinished_walk_is_not_gone(ctx, tenant):
    """The agent walks its roots for image files within a time budget and says when it stopped early
    (``images_complete``: false, e.g. on a loaded host, or an agent paused and resumed mid-walk); an
    image the walk did not reach is not "no longer on host" (backups of it were refused for up to the
    agent's two-minute walk cache). A finished walk without it still retires it."""
    _enrolled(ctx, tenant)
    _answer(ctx, "agent-1", INVENTORY)
    partial = {**INVENTORY, "images_complete": False,
               "block_devices": [d for d in INVENTORY["block_devices"] if d["kind"] != "image"]}
    _answer(ctx, "agent-1", partial)
    with ctx.read() as s:
        image = s.scalar(select(Resource).where(Resource.path == "/srv/images/a.img"))
        assert image.status == "available", image.status_reason
    _answer(ctx, "agent-1", {**partial, "images_complete": True})
    with ctx.read() as s:
        image = s.scalar(select(Resource).where(Resource.path == "/srv/images/a.img"))
        assert image.status == "error" and "no longer on host" in image.status_reason


def test_an_answer_asked_for_before_a_disk_changed_does_not_retire_it(ctx, tenant):
    """A poll's answer can be put together before a task made a disk file on the host and arrive after
    the task ended (the disk's row then says available): such an answer proves nothing about that disk.
    An answer asked for after the change still retires a disk that is gone."""
    from opencbr.catalog.models import utcnow

    _enrolled(ctx, tenant)
    asked_before = utcnow()
    _answer(ctx, "agent-1", INVENTORY)  # the image's row is made (changed) after the next answer was asked for
    without = {**INVENTORY, "block_devices": [d for d in INVENTORY["block_devices"] if d["kind"] != "image"]}
    with ctx.tx() as s:
        inventory.apply(s, ctx, s.get(agents.registry.Agent, "agent-1"), without, asked_at=asked_before)
    with ctx.read() as s:
        image = s.scalar(select(Resource).where(Resource.path == "/srv/images/a.img"))
        assert image.status == "available", image.status_reason
    with ctx.tx() as s:
        inventory.apply(s, ctx, s.get(agents.registry.Agent, "agent-1"), without, asked_at=utcnow())
    with ctx.read() as s:
        image = s.scalar(select(Resource).where(Resource.path == "/srv/images/a.img"))
        assert image.status == "error" and "no longer on host" in image.status_reason


def test_a_restore_target_outside_the_roots_the_agent_told_is_refused_at_once(ctx, tenant):
    """A new disk, a new file system or single files restored onto an agent's host outside its roots were
    accepted and queued, and the task then failed on the host ("... is outside this agent's roots"): a
    400 now, as for ``add_agent_path``."""
    from opencbr.services.agents import targets

    _enrolled(ctx, tenant)
    _answer(ctx, "agent-1", INVENTORY)
    _roots_told(ctx, "agent-1", ["/srv/data"])
    kw = {"size": 1 << 20, "zone": "local-1a", "description": ""}
    for outside in ("/tmp/x", "/srv/data/../x", "/srv/database/x"):
        with ctx.tx() as s, pytest.raises(InvalidParameter, match="outside the roots of agent"):
            targets.new_disk(s, ctx, tenant, "agent-1", outside + ".img", name="d", encrypted=False, **kw)
        with ctx.tx() as s, pytest.raises(InvalidParameter, match="outside the roots of agent"):
            targets.new_file_system(s, ctx, tenant, "agent-1", outside, name="f", **kw)
        with ctx.tx() as s, pytest.raises(InvalidParameter, match="outside the roots of agent"):
            targets.check_destination(s, targets.host_resource(s, ctx, tenant, "agent-1"), outside)
    with ctx.tx() as s:
        assert targets.new_disk(s, ctx, tenant, "agent-1", "/srv/data/new.img", name="d", encrypted=False,
                                **kw).path == "/srv/data/new.img"
        assert targets.new_file_system(s, ctx, tenant, "agent-1", "/srv/data/new", name="f", **kw).path == \
            "/srv/data/new"
        targets.check_destination(s, targets.host_resource(s, ctx, tenant, "agent-1"), "/srv/data/out")


def test_restore_files_onto_an_agent_older_than_the_no_overwrite_one_is_refused(ctx, tenant):
    """Agents before 0.2.0 restored a file-system backup's single files over those of the same name in the
    destination, without a word (found by helper 89, mixing versions), and the service cannot see the host
    to check: restore-files onto such an agent is refused, saying to upgrade it; 0.2.0 and later go on."""
    from opencbr.services.agents import targets

    _enrolled(ctx, tenant)
    _answer(ctx, "agent-1", INVENTORY)
    for version, refused in (("0.1.0", True), ("", True), ("0.2.0", False), ("0.10.1", False)):
        with ctx.tx() as s:
            s.get(agents.registry.Agent, "agent-1").agent_version = version
        with ctx.tx() as s:
            host = targets.host_resource(s, ctx, tenant, "agent-1")
            if refused:
                with pytest.raises(CBRError, match="upgrade it to 0.2.0") as e:
                    targets.check_files_never_over(s, host)
                assert e.value.code == "BackupService.6466"
            else:
                targets.check_files_never_over(s, host)


def test_a_host_whose_device_patterns_allow_no_disk_says_what_to_do(ctx, tenant):
    """An agent whose --device patterns match none of its host's disks makes a server of no disk: it was
    not protectable with 6103 "the server has no disk attached" and no word of the patterns."""
    from opencbr.api import wire

    _enrolled(ctx, tenant)
    _answer(ctx, "agent-1", {**INVENTORY, "block_devices": []})
    with ctx.read() as s:
        views, _ = resources.list_resources(s, tenant, rtype=R.SERVER)
        (view,) = [v for v in views if v.resource.agent_id == "agent-1"]
        shown = wire.protectable_resp(view, None)
        assert shown["protectable"]["code"] == "BackupService.6103", shown
        assert "--device PATTERN" in shown["protectable"]["reason"]
        with pytest.raises(CBRError, match="--device PATTERN"):
            R.check_protectable(resources.resource_state(s, view.resource))
