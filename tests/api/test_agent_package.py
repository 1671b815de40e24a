"""The agent's installation files, served by a running service (public: no secret in them)."""

from __future__ import annotations

import io
import urllib.request
import zipfile

from opencbr.agentlink import package
from tests.support.server import sqlite_server_fixture

server = sqlite_server_fixture("agent-package")  # nothing here touches the catalog


def _get(url: str) -> tuple[bytes, dict]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=30) as resp:
        return resp.read(), dict(resp.headers)


def test_the_service_serves_the_install_script_and_the_packages_unsigned(server):
    script, headers = _get(f"{server.url}/agent/install.sh")
    text = script.decode()
    assert text.startswith("#!/bin/sh") and f"ENDPOINT={server.url.rstrip('/')}" in text
    assert "--token" not in text.split("register --endpoint")[1].split("\n")[0]  # the token comes as an argument
    wheel, headers = _get(f"{server.url}/agent/package.whl")
    assert package.wheel_name() in headers["content-disposition"]
    assert "opencbr/agent/cli.py" in zipfile.ZipFile(io.BytesIO(wheel)).namelist()
    sdist, headers = _get(f"{server.url}/agent/package")
    assert package.sdist_name() in headers["content-disposition"] and sdist[:2] == b"\x1f\x8b"
    # under its own name too (pip tells an archive by its URL), with the C sources a host may build
    named, _ = _get(f"{server.url}/agent/{package.sdist_name()}")
    assert named == sdist
    import tarfile
    names = tarfile.open(fileobj=io.BytesIO(named)).getnames()
    top = package.sdist_name().removesuffix(".tar.gz")
    assert f"{top}/setup.py" in names and f"{top}/src/opencbr/engine/tree/_reading.c" in names


def test_the_step_by_step_install_commands_work_as_printed(server, tmp_path):
    """``cbr agent install-command``'s three steps, run as printed (``sudo`` dropped, the prefix and the
    unit directory moved into tmp_path, no package index: only the agent's own wheel is installed).
    They installed ``{url}/agent/package.whl``, a name pip refuses ("not a valid wheel filename"), into
    the system's Python, and started a systemd unit nothing had written."""
    import os
    import subprocess

    from tests.support.clients import api

    cmds = api(server).get("/agents/install-command")["install_command"]
    prefix, unit_dir, fake = tmp_path / "opt", tmp_path / "units", tmp_path / "bin"
    unit_dir.mkdir(), fake.mkdir()
    (fake / "systemctl").write_text(f"#!/bin/sh\necho \"$@\" >> {tmp_path}/systemctl.log\n")
    (fake / "systemctl").chmod(0o755)

    def run(cmd: str) -> subprocess.CompletedProcess:
        cmd = cmd.replace("sudo ", "").replace(package.PREFIX, str(prefix)).replace("/etc/systemd/system", str(unit_dir))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(PATH=f"{fake}:{env['PATH']}", PIP_NO_DEPS="1", PIP_NO_INDEX="1", NO_PROXY="*",
                   PIP_DISABLE_PIP_VERSION_CHECK="1")
        return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=300, env=env)

    done = run(cmds["package"])
    assert done.returncode == 0, done.stderr[-1500:]
    version = subprocess.run([str(prefix / "bin" / "opencbr-agent"), "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == f"opencbr-agent {package.__version__}"
    assert cmds["register"].startswith(f"sudo {package.PREFIX}/bin/opencbr-agent register --endpoint {server.url}")
    done = run(cmds["start"])
    assert done.returncode == 0, done.stderr[-1500:]
    assert (unit_dir / "opencbr-agent.service").read_text() == package.SYSTEMD_UNIT
    assert "enable --now opencbr-agent" in (tmp_path / "systemctl.log").read_text()


def test_the_one_line_install_fails_loudly_when_the_service_cannot_be_reached(server, tmp_path):
    """The printed one-line installation, run where the service's address does not answer, fails with
    curl's error. (`curl URL | sudo sh -s -- ...` ran an empty script then, and the line exited 0.)"""
    import subprocess

    from tests.support.clients import api
    from tests.support.server import free_port

    line = api(server).post("/agents/tokens", {})["install_command"]["install"]
    line = line.replace(server.url, f"http://127.0.0.1:{free_port()}").replace("sudo ", "")
    line = line.replace("<DIRECTORY>", str(tmp_path))
    done = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "NO_PROXY": "*"})
    assert done.returncode != 0 and "curl: (7)" in done.stderr, (done.returncode, done.stderr)
    assert not (tmp_path / package.INSTALL_FILE).exists()
