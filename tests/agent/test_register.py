"""Enrolment from the agent's side (token and AK/SK), against the protocol's stand-in service."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from opencbr.agentlink import certs
from opencbr.engine.tree.sources import native_reading
from opencbr.engine.tree.walker import native_listing
from tests.agent.conftest import agent_cmd, agent_env


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_token_enrolment_writes_a_private_configuration_and_pins_the_ca(tmp_path, enrol_service):
    config = tmp_path / "etc" / "agent.json"
    root = tmp_path / "data"
    root.mkdir()
    done = agent_cmd(config, "register", "--endpoint", enrol_service.url, "--token", enrol_service.new_token(),
                     "--listen", "127.0.0.1:0", "--advertise", "127.0.0.1:7443", "--root", str(root),
                     "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 0, done.stderr
    assert _mode(config) == 0o600 and _mode(config.parent) == 0o700
    cfg = json.loads(config.read_text())
    assert cfg["project_id"] == enrol_service.project_id and cfg["roots"] == [str(root)]
    assert certs.fingerprint(cfg["ca_pem"]) == certs.fingerprint(enrol_service.ca)
    assert certs.common_name(cfg["cert_pem"]) == cfg["agent_id"]
    assert enrol_service.agents[cfg["agent_id"]]["endpoint"] == "127.0.0.1:7443"
    assert "BEGIN PRIVATE KEY" in cfg["key_pem"]
    # the hint starts the agent with the configuration just written (`opencbr-agent run` alone read
    # /etc/opencbr-agent/agent.json, which did not exist); with roots given, no note about them
    assert f"start the agent with: opencbr-agent --config {config} run\n" in done.stdout, done.stdout
    assert "no --root" not in done.stderr

    status = agent_cmd(config, "status")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["service_reachable"] is True and shown["enrolled"] is True and shown["certificate_expires"]
    assert "PRIVATE KEY" not in status.stdout + status.stderr
    # which readers a tree backup uses here: the C extensions where built, else Python, said so
    built = native_listing() is not None and native_reading() is not None
    assert shown["tree_readers"].startswith("C extensions" if built else "Python for the"), shown["tree_readers"]
    ruled_out = subprocess.run([sys.executable, "-m", "opencbr.agent", "--config", str(config), "status"],
                               capture_output=True, text=True, timeout=60,
                               env={**agent_env(), "OPENCBR_READING": "python"})
    assert json.loads(ruled_out.stdout)["tree_readers"].startswith("Python for the small-file reader:")

    again = agent_cmd(config, "register", "--endpoint", enrol_service.url, "--token", enrol_service.new_token())
    assert again.returncode == 2 and "--force" in again.stderr

    gone = agent_cmd(config, "unregister-local")
    assert gone.returncode == 0 and not config.exists()


def test_an_enrolment_without_roots_says_what_cannot_be_protected(tmp_path, enrol_service):
    """An agent enrolled as `cbr agent token` printed it (no --root) served no directory and no image
    file, and nothing said so until a path added in the service was refused."""
    config = tmp_path / "agent.json"
    done = agent_cmd(config, "register", "--endpoint", enrol_service.url, "--token", enrol_service.new_token(),
                     "--listen", "127.0.0.1:0", "--advertise", "127.0.0.1:7443")
    assert done.returncode == 0, done.stderr
    assert json.loads(config.read_text())["roots"] == []
    note = " ".join(done.stderr.split())
    assert "no --root given" in note and "no directory and no image file" in note, done.stderr
    assert f'"roots" in {config} and restart the agent' in note and "--force and --root DIR" in note


def test_a_token_is_used_once(tmp_path, enrol_service):
    token = enrol_service.new_token()
    assert agent_cmd(tmp_path / "a.json", "register", "--endpoint", enrol_service.url, "--token", token).returncode == 0
    second = agent_cmd(tmp_path / "b.json", "register", "--endpoint", enrol_service.url, "--token", token)
    assert second.returncode == 1 and "used" in second.stderr and not (tmp_path / "b.json").exists()


def test_a_tampered_answer_or_another_ca_is_refused(tmp_path, enrol_service):
    enrol_service.tamper_answer = True
    bad = agent_cmd(tmp_path / "a.json", "register", "--endpoint", enrol_service.url, "--token", enrol_service.new_token())
    assert bad.returncode == 1 and "proof" in bad.stderr and not (tmp_path / "a.json").exists()
    enrol_service.tamper_answer, enrol_service.other_ca = False, True
    bad = agent_cmd(tmp_path / "b.json", "register", "--endpoint", enrol_service.url, "--token", enrol_service.new_token())
    assert bad.returncode == 1 and "CA" in bad.stderr and not (tmp_path / "b.json").exists()


def test_aksk_enrolment_signs_like_the_sdk_and_checks_a_given_ca_fingerprint(tmp_path, enrol_service):
    base = ["register", "--endpoint", enrol_service.url, "--project-id", enrol_service.project_id,
            "--ak", enrol_service.ak]
    wrong = agent_cmd(tmp_path / "a.json", *base, "--sk", "not-the-key")
    assert wrong.returncode == 1 and "signature" in wrong.stderr
    other = agent_cmd(tmp_path / "a.json", *base, "--sk", enrol_service.sk, "--ca-fingerprint", "sha256:" + "0" * 64)
    assert other.returncode == 1 and "--ca-fingerprint" in other.stderr and not (tmp_path / "a.json").exists()
    ok = agent_cmd(tmp_path / "a.json", *base, "--sk", enrol_service.sk,
                   "--ca-fingerprint", certs.fingerprint(enrol_service.ca))
    assert ok.returncode == 0, ok.stderr
    cfg = json.loads((tmp_path / "a.json").read_text())
    assert cfg["agent_id"] in enrol_service.agents and certs.common_name(cfg["cert_pem"]) == cfg["agent_id"]


def test_the_secret_key_comes_from_standard_input_or_the_environment(tmp_path, enrol_service):
    """Off the command line (the process list, the shell's history); never written (docs/agents.md)."""
    base = [sys.executable, "-m", "opencbr.agent", "--config", str(tmp_path / "a.json"), "register", "--endpoint",
            enrol_service.url, "--project-id", enrol_service.project_id, "--ak", enrol_service.ak]
    empty = subprocess.run([*base, "--sk", "-"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                           timeout=60, env=agent_env())
    assert empty.returncode == 2 and "no secret key on standard input" in empty.stderr
    env = {**agent_env(), "OPENCBR_AGENT_SK": enrol_service.sk}
    ok = subprocess.run(base, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60, env=env)
    assert ok.returncode == 0, ok.stderr
    assert enrol_service.sk not in (tmp_path / "a.json").read_text()
