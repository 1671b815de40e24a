"""The agent program against the real service: enrolment with a token from the API, the scheduler's poll
seeing the agent online with its inventory (official SDK), unregistering revoking it at once, and the
installation script the service serves, run as a host would run it."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("opencbr.services.agents", reason="the service's agent routes are not in this tree yet")

from cryptography import x509  # noqa: E402
from cryptography.x509.oid import ExtendedKeyUsageOID  # noqa: E402
from huaweicloudsdkcbr.v1 import (  # noqa: E402
    AgentUpdate,
    AgentUpdateReq,
    ShowAgentRequest,
    UnregisterAgentRequest,
    UpdateAgentRequest,
)

from opencbr.agent.config import AgentConfig  # noqa: E402
from opencbr.agentlink import package, tls  # noqa: E402
from tests.agent.conftest import AgentProcess, agent_cmd, agent_env  # noqa: E402
from tests.support.building import can_build_extensions  # noqa: E402
from tests.support.clients import api, sdk  # noqa: E402
from tests.support.databases import sqlite_url  # noqa: E402
from tests.support.server import Creds, ServerProcess, free_port  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("agent-service"))
    srv = ServerProcess(d, sqlite_url(d), workers=1, extra_env={"OPENCBR_AGENT_POLL_SECONDS": "1"}).start()
    yield srv
    srv.stop()


def _wait(predicate, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = predicate()
        if found:
            return found
        time.sleep(0.3)
    return predicate()


@pytest.mark.parametrize("how", ["unregister", "uninstall"])
def test_enrol_with_a_token_be_polled_online_and_be_revoked(tmp_path, server, how):
    """Unregistering the agent, or update_agent saying it was uninstalled, revokes it at once: a running
    agent is told, forgets its certificate and stops."""
    token = api(server).post("/agents/tokens", {})["token"]
    config, root = tmp_path / "etc" / "agent.json", tmp_path / "srv"
    (root / "www").mkdir(parents=True)
    port = free_port()
    done = agent_cmd(config, "register", "--endpoint", server.url, "--token", token, "--listen", f"127.0.0.1:{port}",
                     "--advertise", f"127.0.0.1:{port}", "--root", str(root), "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 0, done.stderr
    agent_id = json.loads(config.read_text())["agent_id"]
    client = sdk(server)
    agent = AgentProcess(config)
    try:
        shown = _wait(lambda: (a := client.show_agent(ShowAgentRequest(agent_id=agent_id)).agent).status == "online" and a)
        assert shown, server.log()[-3000:]
        assert shown.agent_version and shown.host_name

        if how == "unregister":
            client.unregister_agent(UnregisterAgentRequest(agent_id=agent_id))
        else:
            client.update_agent(UpdateAgentRequest(agent_id=agent_id, body=AgentUpdateReq(
                agent=AgentUpdate(status="uninstall"))))
            assert client.show_agent(ShowAgentRequest(agent_id=agent_id)).agent.status == "uninstalled"
        agent.proc.wait(timeout=20)  # revoked: it forgot its certificate and stopped
        left = json.loads(config.read_text())
        assert left["agent_id"] == agent_id and not left["cert_pem"] and not left["key_pem"]
        assert os.stat(config).st_mode & 0o077 == 0
    finally:
        agent.stop()


@pytest.mark.parametrize("build", ["auto", "always"])
def test_the_install_script_installs_enrols_and_starts_the_agent(tmp_path, server, build):
    """The install script piped to ``sh -s -- --token T ...`` (it may still be run so) with the system's
    Python, offline: pip finds no index (PIP_NO_INDEX) and takes the dependencies from the distribution
    (python3-cryptography, through --system-site-packages); systemctl is a stand-in recording its calls
    (OPENCBR_AGENT_SYSTEMD=yes: as where systemd runs the host); the paths are the test's.
    ``OPENCBR_AGENT_BUILD``: ``auto`` keeps the wheel's C extensions, which load with this Python;
    ``always`` builds them from the source package, as on a host with another Python (where this host
    can: a compiler and Python's headers), and the installed agent reads with what it built."""
    python3 = _system_python()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    script = opener.open(f"{server.url}/agent/install.sh", timeout=30).read().decode()
    token = api(server).post("/agents/tokens", {})["token"]
    bin_dir, units, calls = tmp_path / "bin", tmp_path / "units", tmp_path / "systemctl.calls"
    env = _offline_host(tmp_path, f'echo "$@" >> {calls}')
    # systemctl is the stand-in: the unit is installed as on a host that systemd runs
    env.update(OPENCBR_AGENT_BUILD=build, OPENCBR_AGENT_SYSTEMD="yes")
    config, port = tmp_path / "etc dir %i" / "agent.json", free_port()  # (a unit needs such a path quoted)
    (tmp_path / "srv").mkdir()
    done = subprocess.run(["sh", "-s", "--", "--token", token, "--config", str(config), "--listen", f"127.0.0.1:{port}",
                           "--root", str(tmp_path / "srv"), "--state-dir", str(tmp_path / "state")],
                          input=script, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    unit = (units / "opencbr-agent.service").read_text()
    # the unit runs the agent with the configuration register wrote (--config was among the arguments:
    # the unit ran the default /etc/opencbr-agent/agent.json, which did not exist); `opencbr-agent status`
    # works as the script and docs/agents.md say (the command is linked into OPENCBR_AGENT_BIN_DIR)
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    words = [w.replace("%%", "%").replace("$$", "$") for w in shlex.split(exec_start[len("ExecStart="):])]
    assert words == [f"{tmp_path / 'opt'}/bin/opencbr-agent", "--config", str(config), "run"]
    assert os.readlink(bin_dir / "opencbr-agent") == str(tmp_path / "opt" / "bin" / "opencbr-agent")
    assert f"opencbr-agent --config '{config}' status" in done.stdout
    assert calls.read_text().splitlines() == ["daemon-reload", "enable --now opencbr-agent",
                                              "--no-pager --lines=0 status opencbr-agent"]
    building = "building the tree engine's C extensions" in done.stdout
    assert building == (build == "always" and can_build_extensions(Path(python3))), done.stdout + done.stderr
    # both extensions load with the agent's Python (the wheel's, or those built here where this host can)
    probe = subprocess.run([str(tmp_path / "opt" / "bin" / "python"), "-I", "-c", package.EXTENSIONS_PROBE], env=env)
    assert probe.returncode == 0 or (building is False and build == "always")
    # what is installed: the service's wheel, or one pip built here from the source package
    wheel_file = next((tmp_path / "opt").rglob("opencbr_agent-*.dist-info/WHEEL")).read_text()
    assert ("Generator: opencbr\n" in wheel_file) == (not building), wheel_file
    _runs_and_comes_online(server, tmp_path / "opt" / "bin" / "opencbr-agent", config, env)


def _runs_and_comes_online(server, agent: Path, config: Path, env: dict) -> None:
    """The installed agent, run as its unit would, answers the service's heartbeat (online)."""
    agent_id = json.loads(config.read_text())["agent_id"]
    installed = subprocess.Popen([str(agent), "--config", str(config), "run"], env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    try:
        client = sdk(server)
        shown = _wait(lambda: (a := client.show_agent(ShowAgentRequest(agent_id=agent_id)).agent).status == "online" and a)
        assert shown, server.log()[-3000:]
    finally:
        installed.terminate()
        installed.communicate(timeout=20)


def _system_python() -> str:
    python3 = shutil.which("python3", path="/usr/bin:/bin")
    if not python3 or subprocess.run([python3, "-c", "import cryptography, setuptools, pip"], capture_output=True).returncode:
        pytest.skip("no system Python with cryptography and pip here")
    return python3


def _offline_host(tmp_path: Path, systemctl: str) -> dict:
    """The environment of the install script on a host without a package index: pip takes the agent's
    dependencies from the distribution (python3-cryptography, through --system-site-packages); ``systemctl``
    (the body of a stand-in for it in tmp_path/bin) and the paths are the test's."""
    bin_dir, units = tmp_path / "bin", tmp_path / "units"
    bin_dir.mkdir()
    units.mkdir()
    (bin_dir / "systemctl").write_text(f"#!/bin/sh\n{systemctl}\n")
    (bin_dir / "systemctl").chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "OPENCBR_AGENT_PREFIX": str(tmp_path / "opt"),
            "OPENCBR_AGENT_UNIT_DIR": str(units), "OPENCBR_AGENT_VENV_ARGS": "--system-site-packages",
            "OPENCBR_AGENT_BIN_DIR": str(bin_dir), "PIP_NO_INDEX": "1", "PIP_NO_DEPS": "1", "NO_PROXY": "127.0.0.1",
            "PIP_NO_BUILD_ISOLATION": "0"}  # (offline: a build uses the system's setuptools; pip's env reads "0" as "no isolation")


@pytest.mark.skipif(os.path.isdir("/run/systemd/system"), reason="systemd runs this machine")
def test_the_printed_install_line_on_a_host_that_systemd_does_not_run(tmp_path, server):
    """The one line `cbr agent token` prints, run as printed (``sudo`` dropped, ``<DIRECTORY>`` filled in)
    in a container: systemctl is there but refuses, as systemd is not PID 1. The script enrolled the host
    (using up the token), then failed at systemctl, before linking the command; run again, it said
    "enrolled already". Now it installs and enrols, links the command, says how to run the agent, and
    succeeds; and the agent it installed runs."""
    _system_python()
    calls = tmp_path / "systemctl.calls"
    env = _offline_host(tmp_path, f'echo "$@" >> {calls}\necho "System has not been booted with systemd" >&2; exit 1')
    env.update(OPENCBR_AGENT_BUILD="never")
    config, root, port = tmp_path / "etc" / "agent.json", tmp_path / "srv", free_port()
    root.mkdir()
    line = api(server).post("/agents/tokens", {})["install_command"]["install"].replace("sudo ", "")
    assert line.endswith(" --root <DIRECTORY>")
    line = line.replace("<DIRECTORY>", shlex.join([str(root), "--config", str(config), "--listen", f"127.0.0.1:{port}",
                                                   "--state-dir", str(tmp_path / "state")]))
    done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not calls.exists() and not list((tmp_path / "units").iterdir())  # systemd was left alone
    agent = tmp_path / "opt" / "bin" / "opencbr-agent"
    assert os.readlink(tmp_path / "bin" / "opencbr-agent") == str(agent)
    assert "systemd does not run this host" in done.stderr and "nothing starts the agent" in done.stdout
    assert f"{agent} --config '{config}' run\n" in done.stdout, done.stdout
    _runs_and_comes_online(server, agent, config, env)


def test_the_install_script_without_a_package_index_says_how_to_install_offline(tmp_path, server):
    """pip failing for want of an index (``No matching distribution found for blake3==...``) was the
    script's last word. It now says how to bring the packages over, before the token is used."""
    python3 = _system_python()
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    script = opener.open(f"{server.url}/agent/install.sh", timeout=30).read().decode()
    env = _offline_host(tmp_path, "exit 0")
    del env["OPENCBR_AGENT_VENV_ARGS"], env["PIP_NO_DEPS"]  # (the dependencies are nowhere to be found)
    config = tmp_path / "agent.json"
    done = subprocess.run(["sh", "-s", "--", "--token", api(server).post("/agents/tokens", {})["token"],
                           "--config", str(config)], input=script, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1 and not config.exists(), done.stdout + done.stderr  # not enrolled
    said = done.stderr.split("pip could not install the agent", 1)[-1]
    assert " ".join(package.AGENT_DEPENDENCIES) in said, done.stderr
    download = f"pip download -d DIR {server.url}/agent/{package.wheel_name()}"
    assert download in said and "PIP_NO_INDEX=1 PIP_FIND_LINKS=DIR" in said and "docs/agents.md" in said
    # the download as printed takes the agent's wheel from the service (here without its dependencies)
    got = subprocess.run([python3, "-m", *download.replace("DIR", str(tmp_path / "dl")).split()], capture_output=True,
                         text=True, timeout=120, env={**env, "PIP_NO_DEPS": "1"})
    assert got.returncode == 0 and (tmp_path / "dl" / package.wheel_name()).exists(), got.stderr


def _backup_only_keys(server, name: str) -> Creds:
    admin = api(server)
    admin.post("/iam/users", {"name": name, "role": "backup"})
    c = admin.post("/iam/credentials", {"user_name": name})["credential"]
    return Creds(c["access_key"], c["secret_key"], server.admin.project_id)


def test_a_host_enrolled_with_backup_only_keys_keeps_no_api_credential(tmp_path, server):
    """docs/roles.md, "Agents": what stays on the host after ``register --ak --sk`` is its key and
    certificate (server usage only), never the keys it enrolled with; a host cannot take the service's name."""
    keys = _backup_only_keys(server, "host-enrol")
    etc, state = tmp_path / "etc", tmp_path / "state"
    done = subprocess.run([sys.executable, "-m", "opencbr.agent", "--config", str(etc / "agent.json"), "register",
                           "--endpoint", server.url, "--project-id", keys.project_id, "--ak", keys.ak, "--sk", "-",
                           "--listen", "127.0.0.1:0", "--advertise", "127.0.0.1:7443", "--state-dir", str(state)],
                          input=keys.sk + "\n", capture_output=True, text=True, timeout=60, env=agent_env())
    assert done.returncode == 0, done.stderr  # (the SK came on standard input: not in the process list)
    cfg = json.loads((etc / "agent.json").read_text())
    assert set(cfg) == {f.name for f in dataclasses.fields(AgentConfig)}  # nothing but the agent's own settings
    for d in (etc, state):
        for f in (p for p in d.rglob("*") if p.is_file()) if d.exists() else ():
            text = f.read_text(errors="replace")
            assert keys.ak not in text and keys.sk not in text, f
    cert = x509.load_pem_x509_certificate(cfg["cert_pem"].encode())
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]  # it cannot be presented as a client, to any agent

    reserved = agent_cmd(tmp_path / "other.json", "register", "--endpoint", server.url, "--project-id",
                         keys.project_id, "--ak", keys.ak, "--sk", keys.sk, "--agent-id", tls.SERVICE_CN)
    assert reserved.returncode == 1 and "BackupService.6612" in reserved.stderr
    assert not (tmp_path / "other.json").exists()


def test_an_aksk_enrolment_the_agent_refuses_leaves_no_agent_in_the_service(tmp_path, server):
    """A wrong ``--ca-fingerprint`` (or a certificate that is not for the agent) is found only in the
    service's answer, after register_agent created the agent there: the agent refuses and removes that
    agent again. (It stayed, enrolled and offline for ever, with a certificate whose key was dropped.)"""
    creds = server.admin
    before = {a["agent_id"] for a in api(server).get("/agents")["agents"]}
    done = agent_cmd(tmp_path / "a.json", "register", "--endpoint", server.url, "--project-id", creds.project_id,
                     "--ak", creds.ak, "--sk", creds.sk, "--ca-fingerprint", "sha256:" + "0" * 64,
                     "--listen", f"127.0.0.1:{free_port()}")
    assert done.returncode == 1 and "--ca-fingerprint" in done.stderr and not (tmp_path / "a.json").exists()
    assert "removed again" in done.stderr, done.stderr
    assert {a["agent_id"] for a in api(server).get("/agents")["agents"]} == before
