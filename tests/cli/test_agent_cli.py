"""``cbr agent`` as a user runs it: token, install-command, list, show, path add/remove, unregister."""

from __future__ import annotations

from tests.support.clients import api, cli
from tests.support.databases import sqlite_url
from tests.support.server import ServerProcess, sqlite_server_fixture

server = sqlite_server_fixture("cli-agents")


def ok(r):
    assert r.code == 0, f"exit {r.code}\nstdout: {r.out}\nstderr: {r.err}"
    return r


def test_agent_commands(server):
    sfx = "x"
    token = ok(cli(server, "agent", "token", "--json")).json()
    assert token["token"].startswith("ocbr1.") and token["token"] in token["install_command"]["register"]
    assert token["install_command"]["install"] == (
        f"curl -fsSLo opencbr-agent-install.sh {server.url}/agent/install.sh && sudo sh opencbr-agent-install.sh "
        f"--token {token['token']} --root <DIRECTORY>")
    text = ok(cli(server, "agent", "token")).out
    assert "opencbr-agent register" in text and "--token ocbr1." in text
    # a directory to fill in, like the token (an agent enrolled without --root served no directory)
    assert token["install_command"]["register"].endswith(f"--token {token['token']} --root <DIRECTORY>")
    assert f"({token['install_command']['root_hint']})" in text and "<DIRECTORY>" in token["install_command"]["root_hint"]
    cmds = ok(cli(server, "agent", "install-command", "--json")).json()
    assert server.url in cmds["register"] and "<TOKEN>" in cmds["register"]
    # docs/agents.md: register --ca-fingerprint sha256:... "(cbr agent install-command shows it)"
    assert cmds["ca_fingerprint"] == "sha256:" + token["token"].split(".")[4]
    shown = ok(cli(server, "agent", "install-command")).out
    assert cmds["ca_fingerprint"] in shown
    # the hint is printed in parentheses (the console shows it bare): it has none of its own
    assert f"({cmds['token_hint']})" in shown and "((" not in shown and "))" not in shown
    api(server).post("/agents", {"agent": {"agent_id": f"cli-agent-{sfx}", "host_name": f"cli-host-{sfx}",
                                           "host_ip": "10.1.1.1", "host_os": "Linux"}})
    listed = ok(cli(server, "agent", "list", "--json")).json()
    assert f"cli-agent-{sfx}" in [a["agent_id"] for a in listed]
    assert f"cli-host-{sfx}" in ok(cli(server, "agent", "list")).out
    added = ok(cli(server, "agent", "path", "add", f"cli-host-{sfx}", "/srv/www", "/data",
                   "--exclude", "/srv/www/cache", "--json")).json()
    assert added == {"added": ["/srv/www", "/data"], "existed": []}
    shown = ok(cli(server, "agent", "show", f"cli-agent-{sfx}", "--json")).json()
    assert shown["status"] == "offline" and {p["dir_path"]: p["exclude_paths"] for p in shown["paths"]} == {
        "/srv/www": "/srv/www/cache", "/data": ""}
    assert "/srv/www/cache" in ok(cli(server, "agent", "show", f"cli-agent-{sfx}")).out
    again = ok(cli(server, "agent", "path", "add", f"cli-host-{sfx}", "/srv/www", "--exclude", "/srv/www/tmp")).out
    # (said only "already there" while it replaced the path's exclusions)
    assert "already there: /srv/www" in again and "/srv/www: leaves out /srv/www/tmp" in again
    shown = ok(cli(server, "agent", "show", f"cli-agent-{sfx}", "--json")).json()
    assert {p["dir_path"]: p["exclude_paths"] for p in shown["paths"]}["/srv/www"] == "/srv/www/tmp"
    removed = ok(cli(server, "agent", "path", "remove", f"cli-agent-{sfx}", "/data", "--json")).json()
    assert removed == {"removed": ["/data"], "not_existed": []}
    bad = cli(server, "agent", "path", "add", f"cli-agent-{sfx}", "relative")
    assert bad.code == 1 and "absolute" in bad.err
    ok(cli(server, "agent", "unregister", f"cli-agent-{sfx}", "--yes"))
    missing = cli(server, "agent", "show", f"cli-agent-{sfx}")
    assert missing.code == 1 and "no agent" in missing.err


def test_commands_with_a_loopback_address_say_so_and_what_to_set(server, tmp_path):
    """With the default listen address (127.0.0.1) and no public_url, the printed commands fetched the
    script from http://127.0.0.1:PORT on the host to protect, and nothing said why that fails."""
    for args in (("agent", "token"), ("agent", "install-command")):
        done = ok(cli(server, *args))
        warning = " ".join(done.err.split())
        assert warning.startswith(f"WARNING: {server.url} is this machine's own loopback address"), done.err
        assert f'listen = "0.0.0.0:{server.port}"' in warning and f'public_url = "http://HOST:{server.port}"' in warning
        assert "WARNING" not in done.out  # (stdout: the commands alone)
    # the same text in the API's answer, which the console shows
    answer = api(server).get("/agents/install-command")["install_command"]
    assert " ".join(answer["address_warning"].split()) in " ".join(done.err.split())

    # with public_url naming an address other hosts reach, no warning (whatever the caller reached)
    other = ServerProcess(str(tmp_path), sqlite_url(str(tmp_path)), workers=0,
                          extra_env={"OPENCBR_PUBLIC_URL": "http://backup.example:8080"}).start()
    try:
        done = ok(cli(other, "agent", "install-command"))
        assert "WARNING" not in done.err and "http://backup.example:8080/agent/install.sh" in done.out
        assert api(other).get("/agents/install-command")["install_command"]["address_warning"] == ""
    finally:
        other.stop()


def test_agent_show_says_whether_the_agent_is_old(server):
    """check_agent answers is_old for a resource's agent; the agent itself (GET /agents/{id}, cbr agent
    show) said only its version, and nothing whether it needed an upgrade."""
    from opencbr import __version__

    a = api(server)
    for agent_id, version in (("cli-old", "0.0.9"), ("cli-new", __version__)):
        a.post("/agents", {"agent": {"agent_id": agent_id, "host_name": f"host-{agent_id}", "host_ip": "10.1.1.2",
                                     "host_os": "Linux", "agent_version": version}})
    old = ok(cli(server, "agent", "show", "cli-old", "--json")).json()
    new = ok(cli(server, "agent", "show", "cli-new", "--json")).json()
    assert (old["agent_version"], old["is_old"]) == ("0.0.9", True)
    assert (new["agent_version"], new["is_old"]) == (__version__, False)
    text = ok(cli(server, "agent", "show", "cli-old")).out
    assert "Outdated" in text and "yes: upgrade it" in text
    assert "yes: upgrade it" not in ok(cli(server, "agent", "show", "cli-new")).out
    for agent_id in ("cli-old", "cli-new"):
        ok(cli(server, "agent", "unregister", agent_id, "--yes"))
