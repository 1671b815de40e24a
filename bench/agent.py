#!/usr/bin/env python3
"""Agent data-path benchmark: the local provider vs the same backups through an agent over loopback.

    python bench/agent.py [--size 2G] [--files 30000 --total 1.5G] [--workdir /tmp/opencbr-agent-bench]
                          [--only disk|tree] [--plain] [--core-per-host] [--runs N] [--pause-page-reporting]

On the bench disk (``make_dataset.py disk``, seed 1, then ``mutate --percent 5``) and the generated tree
(``make_dataset.py tree``, then ``mutate-tree --percent 2``), into an encrypted vault (``--plain``: not):

- *local*: ``Repository.backup_disk`` / ``backup_tree`` in this process, as a worker runs them for a
  local resource;
- *agent*: an agent process (the real TLS server and the agent's data operations, rooted at the data
  directory; the channel sealed after its handshake, as a worker's) reads, cuts, hashes and encodes; this process serves the vault (``providers/agent``,
  ``engine/remote``: stores the records as the agent's own unverified ones, a sample checked, as a worker
  does for an agent's task: ``agent_id``).

Per step: wall time (page cache dropped before each when root), full-backup throughput (logical bytes /
wall), bytes on the wire (the worker's channel counters: sent + received, framing included) against
the target ``1.2 x added + 0.5 % of logical`` for incrementals, the agent's peak RSS during the step (VmHWM, reset before it), the CPU
seconds the step used (this process, plus the agent's for agent steps) and the machine's load average
after it (on a shared machine the wall times say more about the others than about us).
Targets (issue 14): incremental wire bytes within the target; full throughput >= 80 % of local; agent
RSS < 150 MB.

``--runs N``: N pairs of full backups (the local one, then the agent's, each pair into vaults of its own),
then N pairs of incrementals, each after changes of its own (seeds 2, 3, ...) and of the one before; the
table has a row per backup, and the throughput verdict is the median of the pairs' ratios, with each
(one run on a shared VM moves by 5-10 points from the next). The wire verdict is the worst run's.

On a VM whose balloon device reports free pages to the host, the cold reads after each dropped page cache
cost a step 0.3 s or 2.5 s of kernel CPU at random (``bench/page_reporting.py``): the table's *reported
MiB* column says how much was reported during each step, and ``--pause-page-reporting`` (root) pauses
reporting for the run and puts it back after it. With it paused, three runs of the same code gave the
same ratio to a point; without it they spread by 10-20 points.

By default the agent and this process share every core of the machine, which two hosts never do: the
agent path's second half (the service checking and storing every record) then takes CPU from the agent
itself. ``--core-per-host`` models two machines of one core each (the agent pinned to CPU 0; this
process, which is the service's side and runs the local provider's backups, to CPU 1): the local
provider gets one host's core, the agent path the protected host's core plus the service's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT / "src"), str(REPO_ROOT)]

from bench import page_reporting  # noqa: E402
from bench.disk import drop_caches  # noqa: E402
from opencbr.engine import Repository  # noqa: E402
from opencbr.providers.agent import AgentProvider  # noqa: E402
from opencbr.providers.agent.provider import HostDisk  # noqa: E402
from opencbr.storage import open_store  # noqa: E402
from tests.providers.agent.agents import AgentProcess, Authority  # noqa: E402

PY = sys.executable
DATASET = REPO_ROOT / "bench" / "make_dataset.py"
MASTER = b"\x42" * 32
AGENT_ID = "bench-agent"  # whose records the vault stores (a worker passes the agent's id)


def sh(*args: str) -> None:
    subprocess.run([PY, str(DATASET), *args], check=True)


class Wire:
    """A ``connect`` that keeps the worker's channels, for their byte counters."""

    def __init__(self, agent: AgentProcess):
        self.agent = agent
        self.channels: list = []

    def __call__(self):
        ch = self.agent.connect()
        self.channels.append(ch)
        return ch

    def take(self) -> int:
        n = sum(c.sent_bytes + c.received_bytes for c in self.channels)
        self.channels.clear()
        return n


LOADS: list[float] = []  # the machine's 1-minute load average after each step (others share it)
CPU: list[tuple[float, float]] = []  # CPU seconds of this process (the worker's side) and of the agent, per step
REPORTED: list[float | None] = []  # MiB of free memory reported to the host during each step (None: not counted)
AGENT_PID = [0]


def _cpu_seconds() -> tuple[float, float]:
    own = os.times()
    agent = 0.0
    if AGENT_PID[0]:
        fields = Path(f"/proc/{AGENT_PID[0]}/stat").read_text().rsplit(")", 1)[1].split()
        agent = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own.user + own.system, agent


def pin(pid: int, cpu: int) -> None:
    """Every thread of ``pid`` on ``cpu`` (threads started later inherit it from their creator)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), {cpu})


def timed(fn, agent: AgentProcess | None = None):
    reported = page_reporting.reported_kib()  # (before the drop: what it frees is reported during the step)
    drop_caches()
    if agent is not None:  # the step's own peak, not the process's since it started
        agent.reset_peak_rss()
    c, t = _cpu_seconds(), time.monotonic()
    r = fn()
    wall = time.monotonic() - t
    c2 = _cpu_seconds()
    CPU.append((c2[0] - c[0], c2[1] - c[1]))
    after = page_reporting.reported_kib()
    REPORTED.append(None if reported is None or after is None else (after - reported) / 1024)
    LOADS.append(os.getloadavg()[0])
    return r, wall


def new_repo(work: Path, name: str, encrypted: bool) -> Repository:
    return Repository.create(open_store((work / name).as_uri()), "v/", MASTER if encrypted else None,
                             encrypted=encrypted)


def drop_vaults(work: Path, *names: str) -> None:
    for name in names:
        shutil.rmtree(work / name, ignore_errors=True)


def bench_disk(work: Path, data: Path, agent: AgentProcess, a) -> list[dict]:
    img = data / "disk.img"
    sh("disk", str(img), "--size", a.size, "--seed", "1")
    size = img.stat().st_size
    wire, p = Wire(agent), AgentProvider()
    rows = []
    for run in range(1, a.runs + 1):  # each pair of full backups into vaults of their own
        drop_vaults(work, f"local-disk-{run - 1}", f"agent-disk-{run - 1}")  # (the disk's room)
        local = new_repo(work, f"local-disk-{run}", not a.plain)
        remote = new_repo(work, f"agent-disk-{run}", not a.plain)
        r, t = timed(lambda local=local: local.backup_disk(str(img), backup_id="f", meta={}))
        rows.append(dict(kind="disk", variant="local", step="full", run=run, wall=t, logical=size,
                         added=r.added_bytes, wire=0))
        r, t = timed(lambda remote=remote: p.backup_disks(remote, wire, project_id="p1", agent_id=AGENT_ID,
                                                    disks=[HostDisk(str(img), "f", None, {})]),
                     agent)
        rows.append(dict(kind="disk", variant="agent", step="full", run=run, wall=t, logical=size,
                         added=r["disks"][0]["added_bytes"], wire=wire.take(), rss=agent.peak_rss()))
    for run in range(1, a.runs + 1):  # each after changes of its own, an incremental of the one before
        sh("mutate", str(img), "--percent", "5", "--seed", str(1 + run))
        parent = f"i{run - 1}" if run > 1 else "f"
        r, t = timed(lambda run=run, parent=parent: local.backup_disk(str(img), backup_id=f"i{run}", meta={},
                                                                      parent_backup_id=parent))
        rows.append(dict(kind="disk", variant="local", step="incr", run=run, wall=t, logical=size,
                         added=r.added_bytes, wire=0))
        r, t = timed(lambda run=run, parent=parent: p.backup_disks(remote, wire, project_id="p1", agent_id=AGENT_ID,
                                                                   disks=[HostDisk(str(img), f"i{run}", parent, {})]),
                     agent)
        rows.append(dict(kind="disk", variant="agent", step="incr", run=run, wall=t, logical=size,
                         added=r["disks"][0]["added_bytes"], wire=wire.take(), rss=agent.peak_rss()))
    return rows


def bench_tree(work: Path, data: Path, agent: AgentProcess, a) -> list[dict]:
    tree = data / "tree"
    sh("tree", str(tree), "--files", str(a.files), "--total", a.total, "--seed", "1")
    wire, p = Wire(agent), AgentProvider()
    rows = []
    for run in range(1, a.runs + 1):
        drop_vaults(work, f"local-tree-{run - 1}", f"agent-tree-{run - 1}")  # (the disk's room)
        local = new_repo(work, f"local-tree-{run}", not a.plain)
        remote = new_repo(work, f"agent-tree-{run}", not a.plain)
        r, t = timed(lambda local=local: local.backup_tree(str(tree), backup_id="f", meta={}))
        rows.append(dict(kind="tree", variant="local", step="full", run=run, wall=t, logical=r.total_bytes,
                         added=r.added_bytes, wire=0))
        r, t = timed(lambda remote=remote: p.backup_tree(remote, wire, project_id="p1", agent_id=AGENT_ID, path=str(tree), backup_id="f",
                                                         parent=None, meta={}), agent)
        rows.append(dict(kind="tree", variant="agent", step="full", run=run, wall=t, logical=r["total_bytes"],
                         added=r["added_bytes"], wire=wire.take(), rss=agent.peak_rss()))
    for run in range(1, a.runs + 1):  # each after changes of its own, an incremental of the one before
        sh("mutate-tree", str(tree), "--percent", "2", "--seed", str(1 + run))
        parent = f"i{run - 1}" if run > 1 else "f"
        r, t = timed(lambda run=run, parent=parent: local.backup_tree(str(tree), backup_id=f"i{run}", meta={},
                                                                      parent_backup_id=parent))
        rows.append(dict(kind="tree", variant="local", step="incr", run=run, wall=t, logical=r.total_bytes,
                         added=r.added_bytes, wire=0))
        r, t = timed(lambda run=run, parent=parent: p.backup_tree(remote, wire, project_id="p1", agent_id=AGENT_ID, path=str(tree),
                                                                  backup_id=f"i{run}", parent=parent, meta={}), agent)
        rows.append(dict(kind="tree", variant="agent", step="incr", run=run, wall=t, logical=r["total_bytes"],
                         added=r["added_bytes"], wire=wire.take(), rss=agent.peak_rss()))
    return rows


def table(rows: list[dict]) -> str:
    runs = max(r["run"] for r in rows) > 1
    out = ["| data | variant | step |" + (" run |" if runs else "") + " wall s | CPU s (worker + agent) | load | MB/s "
           "| vs local | added MB | wire MB | wire target MB | agent RSS MB | reported MiB |",
           "|---|---|---|" + ("---|" if runs else "") + "---|---|---|---|---|---|---|---|---|---|"]
    by = {(r["kind"], r["variant"], r["step"], r["run"]): r for r in rows}
    for r, cpu, load, reported in zip(rows, CPU, LOADS, REPORTED, strict=True):
        own, agent = cpu
        cpu_cell = f"{own + agent:.2f} ({own:.2f} + {agent:.2f})" if r["variant"] == "agent" else f"{own:.2f}"
        cells = [r["kind"], r["variant"], r["step"], *([str(r["run"])] if runs else []), f"{r['wall']:.2f}", cpu_cell,
                 f"{load:.1f}", f"{r['logical'] / r['wall'] / 1e6:.0f}"]
        target = 1.2 * r["added"] + 0.005 * r["logical"]
        if r["variant"] == "agent":
            local = by.get((r["kind"], "local", r["step"], r["run"]))
            ok = "" if r["step"] == "full" else (" (ok)" if r["wire"] <= target else " (OVER)")
            cells += [f"{local['wall'] / r['wall'] * 100:.0f} %" if local else "", f"{r['added'] / 1e6:.1f}",
                      f"{r['wire'] / 1e6:.1f}{ok}", f"{target / 1e6:.1f}" if r["step"] == "incr" else "",
                      f"{r['rss'] / 1e6:.0f}"]
        else:
            cells += ["", f"{r['added'] / 1e6:.1f}", "", "", ""]
        cells.append("" if reported is None else f"{reported:.0f}")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def _ratios(rows: list[dict], kind: str, step: str) -> list[float]:
    """Local wall / agent wall of each run's pair (the two backups of one run, one after the other)."""
    by = {(r["variant"], r["run"]): r for r in rows if r["kind"] == kind and r["step"] == step}
    return [by["local", run]["wall"] / by["agent", run]["wall"]
            for variant, run in by if variant == "agent" and ("local", run) in by]


def verdicts(rows: list[dict]) -> list[str]:
    """Issue 14's three targets, one line each per data set: met or not, with the figure (the median of
    the runs' ratios with their range; every run's wire bytes and RSS within the target)."""
    out = []
    for kind in dict.fromkeys(r["kind"] for r in rows):
        ratios = sorted(_ratios(rows, kind, "full"))
        if ratios:
            share = statistics.median(ratios)
            spread = f" ({', '.join(f'{x * 100:.0f}' for x in ratios)} in {len(ratios)} runs)" if len(ratios) > 1 else ""
            out.append(f"{kind}: full throughput through the agent {share * 100:.0f} % of local{spread} "
                       "(target >= 80 %): " + ("met" if share >= 0.8 else "NOT met"))
        incrs = [r for r in rows if r["kind"] == kind and r["variant"] == "agent" and r["step"] == "incr"]
        if incrs:
            worst = max(incrs, key=lambda r: r["wire"] / (1.2 * r["added"] + 0.005 * r["logical"]))
            target = 1.2 * worst["added"] + 0.005 * worst["logical"]
            out.append(f"{kind}: incremental wire {worst['wire'] / 1e6:.1f} MB (target <= {target / 1e6:.1f}"
                       f"{', the worst run' if len(incrs) > 1 else ''}): " + ("met" if worst["wire"] <= target else "NOT met"))
        peak = max((r.get("rss", 0) for r in rows if r["kind"] == kind and r["variant"] == "agent"), default=0)
        if peak:
            out.append(f"{kind}: agent peak RSS {peak / 1e6:.0f} MB (target < 150): " + ("met" if peak < 150e6 else "NOT met"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="2G")
    ap.add_argument("--files", type=int, default=30000)
    ap.add_argument("--total", default="1.5G")
    ap.add_argument("--workdir", default="/tmp/opencbr-agent-bench")
    ap.add_argument("--only", choices=["disk", "tree", "all"], default="all")
    ap.add_argument("--plain", action="store_true", help="an unencrypted vault")
    ap.add_argument("--runs", type=int, default=1,
                    help="pairs of full backups (local, then agent, each into new vaults), then as many pairs of "
                    "incrementals of the last ones, each after changes of its own (mutate with seeds 2, 3, ...): "
                    "the verdict is the median of the pairs' ratios (a shared VM's runs spread by 5-10 points)")
    ap.add_argument("--pause-page-reporting", action="store_true",
                    help="pause the VM's free page reporting for the run (root; put back after it): with it on, "
                    "each cold read costs 0.3 or 2.5 s of kernel CPU at random (bench/page_reporting.py)")
    ap.add_argument("--core-per-host", action="store_true",
                    help="model the protected host and the service's host as two machines of one core each: "
                    "the agent on CPU 0; this process (the service's side, and the local provider's backup, which "
                    "reads where the service runs) on CPU 1. Without it both ends share every core, as they "
                    "never do across a network")
    a = ap.parse_args()
    if a.core_per_host and not {0, 1} <= os.sched_getaffinity(0):
        ap.error("--core-per-host needs CPUs 0 and 1")
    work = Path(a.workdir)
    if work.exists():
        shutil.rmtree(work)
    data = work / "data"
    data.mkdir(parents=True)
    agent = AgentProcess(Authority.new(), work / "agent", [data])
    AGENT_PID[0] = agent.proc.pid
    if a.core_per_host:
        pin(agent.proc.pid, 0)
        pin(os.getpid(), 1)
    rows: list[dict] = []
    try:
        with page_reporting.watched(a.pause_page_reporting) as reporting:
            if a.only in ("disk", "all"):
                rows += bench_disk(work, data, agent, a)
            if a.only in ("tree", "all"):
                rows += bench_tree(work, data, agent, a)
    finally:
        agent.stop()
    if a.core_per_host:
        print("one core per host: the agent on CPU 0, the service's side and the local provider on CPU 1")
    print(table(rows))
    print("\n".join(verdicts(rows)))
    print(reporting.summary())


if __name__ == "__main__":
    main()
