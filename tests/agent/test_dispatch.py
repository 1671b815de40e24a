"""How the agent runs data operations (in process, with operations of the test's own over real mutual TLS):
at most ``max_tasks`` at once, errors as codes without tracebacks, the task context they get."""

from __future__ import annotations

import gc
import os
import threading
import time

import pytest

from opencbr.agent.config import AgentConfig
from opencbr.agent.context import AgentError
from opencbr.agent.serve import Agent
from opencbr.agentlink import certs, tls
from opencbr.agentlink.channel import RemoteError
from opencbr.agentlink.client import connect
from opencbr.engine.errors import InvalidArgument

PROJECT = "p" * 32


@pytest.fixture
def pki():
    ca, ca_key = certs.new_authority()
    svc_cert, svc_key = certs.issue(ca, ca_key, tls.SERVICE_CN, server=False, client=True)
    return ca, ca_key, tls.service_client_context(svc_cert, svc_key, ca)


def _agent(tmp_path, pki, operations, **kw):
    ca, ca_key, _ = pki
    cert, key = certs.issue(ca, ca_key, "agent-1", server=True, client=False)
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    cfg = AgentConfig(agent_id="agent-1", project_id=PROJECT, api_endpoint="http://127.0.0.1:9", listen="127.0.0.1:0",
                      roots=[str(root)], key_pem=key, cert_pem=cert, ca_pem=ca, state_dir=str(tmp_path / "state"), **kw)
    agent = Agent(cfg, str(tmp_path / "agent.json"), operations=operations)
    agent.start()
    return agent


def _call(agent, pki, header, timeout=10):
    with connect(f"127.0.0.1:{agent.server.address[1]}", pki[2], expect_common_name="agent-1",
                 expect_fingerprint=None, timeout=5) as ch:
        return ch.request({"project_id": PROJECT, **header}, timeout=timeout)[0]


def test_at_most_max_tasks_run_and_the_next_is_busy(tmp_path, pki):
    started, release = threading.Semaphore(0), threading.Event()

    def slow(ctx, channel, header, payload):
        started.release()
        release.wait(10)
        return {"n": header["n"]}

    agent = _agent(tmp_path, pki, {"backup_disk": slow}, max_tasks=2)
    try:
        answers = {}
        threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, _call(agent, pki, {"op": "backup_disk", "n": i})))
                   for i in range(2)]
        for t in threads:
            t.start()
        assert started.acquire(timeout=5) and started.acquire(timeout=5)
        with pytest.raises(RemoteError) as e:
            _call(agent, pki, {"op": "backup_disk", "n": 3})
        assert e.value.code == "busy"
        assert _call(agent, pki, {"op": "ping"})["ok"]  # control requests are not counted
        assert isinstance(_call(agent, pki, {"op": "check"})["hooks"], list)
        release.set()
        for t in threads:
            t.join(10)
        assert {i: a["result"] for i, a in answers.items()} == {0: {"n": 0}, 1: {"n": 1}}
    finally:
        agent.server.stop()


def test_errors_are_answered_as_codes_without_tracebacks(tmp_path, pki):
    def refuse(ctx, channel, header, payload):
        raise AgentError("target_busy", "the disk is in use")

    def outside(ctx, channel, header, payload):
        return {"fd": ctx.confinement.open("/etc/passwd")}

    def engine(ctx, channel, header, payload):
        raise InvalidArgument("the request lacks 'disks'")

    def crash(ctx, channel, header, payload):
        return {"x": 1 // 0}

    def taken(ctx, channel, header, payload):  # a new image where something is already (O_EXCL)
        (tmp_path / "root" / "there.img").write_bytes(b"x")
        return {"fd": ctx.confinement.open(str(tmp_path / "root" / "there.img"), os.O_RDWR | os.O_CREAT | os.O_EXCL)}

    agent = _agent(tmp_path, pki, {"a": refuse, "b": outside, "c": engine, "d": crash, "e": taken})
    try:
        codes = {}
        for op in "abcde":
            with pytest.raises(RemoteError) as e:
                _call(agent, pki, {"op": op})
            codes[op] = (e.value.code, e.value.message)
        assert codes["a"] == ("target_busy", "the disk is in use")
        assert codes["b"][0] == "refused" and "outside this agent's roots" in codes["b"][1]
        assert codes["c"] == ("invalid_argument", "the request lacks 'disks'")
        assert codes["d"][0] == "internal" and "Traceback" not in codes["d"][1]
        assert codes["e"][0] == "exists" and "File exists" in codes["e"][1]  # (not an "internal" error)
    finally:
        agent.server.stop()


def test_a_task_gets_its_context_and_the_bandwidth_limit(tmp_path, pki):
    seen = {}

    def probe(ctx, channel, header, payload):
        seen.update(roots=ctx.confinement.roots, limit=ctx.bandwidth_limit, channel_limit=channel.limit_bytes_per_second,
                    request_id=ctx.request_id, cancelled=ctx.cancel.is_set(), agent=ctx.config.agent_id)
        return {}

    agent = _agent(tmp_path, pki, {"probe": probe}, bandwidth_limit=5_000_000)
    try:
        _call(agent, pki, {"op": "probe", "request_id": "r1", "bandwidth_limit": 1_000_000})
    finally:
        agent.server.stop()
    assert seen == {"roots": [str(tmp_path / "root")], "limit": 1_000_000.0, "channel_limit": 1_000_000.0,
                    "request_id": "r1", "cancelled": False, "agent": "agent-1"}


def test_a_tasks_garbage_in_cycles_is_collected_once_it_has_answered(tmp_path, pki):
    """Python frees reference cycles only in a full collection, which a long-running process seldom
    runs: the agent collects after each data operation once it has answered (agent/serve.py,
    system/heap.py); a control call such as ``ping`` does not."""

    class Node:
        pass

    def cyclic(ctx, channel, header, payload):
        for _ in range(2000):  # (as a backup's threads, pools and session leave theirs)
            a, b = Node(), Node()
            a.other, b.other = b, a
        return {}

    gc.collect()
    gc.disable()  # (no automatic collection: what is freed is what the agent frees)
    agent = _agent(tmp_path, pki, {"backup_disk": cyclic})
    try:
        full = gc.get_stats()[2]["collections"]
        assert _call(agent, pki, {"op": "ping"})["ok"] is True
        time.sleep(0.3)
        assert gc.get_stats()[2]["collections"] == full
        assert _call(agent, pki, {"op": "backup_disk"})["ok"] is True
        deadline = time.monotonic() + 10
        while gc.get_stats()[2]["collections"] == full and time.monotonic() < deadline:
            time.sleep(0.05)
        left = gc.collect()  # what the operation left in cycles, had the agent not collected it
        assert left < 100, left
    finally:
        gc.enable()
        agent.server.stop()
