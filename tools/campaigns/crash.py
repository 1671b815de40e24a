"""Crash campaign: SIGKILL the service (or a separate ``cbr worker`` process) at random moments of a
backup, restore, create-disk, delete, GC or verify, restart it, and check that recovery is complete.

Each trial: pick an operation (the six in turn, shuffled), a mode ("server": the whole service runs the
task and is killed; "worker": the API has no workers and a ``cbr worker`` process runs the task and is
killed), prepare what the operation needs, start it through the API, wait a random time (adapted to how
long that operation takes here, so most kills land mid-way; some land before it is claimed), SIGKILL,
restart the killed process, wait until no task is waiting or running, then check:

1. no task stays waiting/running, no backup stays protecting/restoring/deleting, no disk stays
   restoring (after 4 x the lease plus two minutes, the service has had every chance to recover);
2. after the next GC (the one recovery queued, or one the campaign triggers by deleting a backup):
   every pack in the vault's store holds at least one chunk an Available backup references, every
   manifest belongs to an Available backup, no lock or unknown object is left, and no chunk an
   Available backup references is missing;
3. the vault's ``used_bytes`` equals the stored size of the distinct chunks the Available backups'
   manifests reference, computed here from the packs' own trailers (not from the service's index);
4. every Available backup restores bit-exact: disks onto their disk (scribbled first, so a restore
   that does nothing cannot pass), file systems into a new empty directory; compared with the SHA-256
   recorded when the backup was taken (sources never change while a backup runs).

Run: ``PYTHONPATH=src python -m tools.campaigns.crash --trials 100 --seed 1 --catalog sqlite``
(see tools/README.md). Exit status 1 when any check failed; every trial is a JSON line in ``--out``.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime

from tests.support.disks import MiB, sha256
from tools.campaigns import harness
from tools.campaigns.harness import (
    BILLING,
    DISK_TYPE,
    FS_BILLING,
    FS_TYPE,
    Campaign,
    Held,
    expected_usage,
    fingerprint,
    mutate_tree,
    random_image,
    random_tree,
    read_store,
    record,
    scribble,
    tree_digest,
)

OPERATIONS = ("backup", "restore", "create_disk", "delete", "gc", "verify")
LEASE_SECONDS = 5


@dataclass
class Trial:
    n: int
    operation: str
    mode: str
    kind: str = ""  # disk | fs
    size: int = 0
    delay: float = 0.0
    state_at_kill: str = ""  # waiting | running N% | success | failed ...
    victim: str = ""
    outcome: str = ""
    seconds: float = 0.0
    violations: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class CrashCampaign(Campaign):
    def __init__(self, workdir: str, catalog: str, seed: int, *, small: bool = False, targeted: float = 0.25):
        """``targeted``: the share of backup kills that land the moment the backup's manifest is in the
        store, before the catalog says Available (the narrowest window of the ordering packs -> index ->
        manifest -> catalog); the others land at random moments."""
        super().__init__(workdir, catalog, seed, (8 * MiB, 48 * MiB) if small else (8 * MiB, 128 * MiB),
                         lease_seconds=LEASE_SECONDS)
        self.targeted = targeted
        self.max_backups = 2 if small else 4
        self.disks: dict[str, str] = {}  # resource id -> image path
        self.fs_id = self.fs_path = ""
        self.triggers: dict[str, tuple[str, str]] = {}  # vault id -> (resource id, path) of a tiny resource
        self.seconds_per_mib = {f"{op}/{kind}": 0.02 for op in OPERATIONS for kind in ("disk", "fs")}

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self) -> None:
        self.svc.start("server")
        c = self.svc.client
        disk_ids = [self.new_disk() for _ in range(2)]
        trig_disk = c.post("/inventory/disks", {"name": "trigger-disk", "path": random_image(
            self.path("trigger.img"), self.rng, 64 * 1024)})["disk"]
        self.vd = c.post("/vaults", {"vault": {"name": "crash-disks", "billing": BILLING, "resources": [
            {"id": i, "type": DISK_TYPE} for i in [*disk_ids, trig_disk["id"]]]}})["vault"]["id"]
        self.triggers[self.vd] = (trig_disk["id"], trig_disk["path"])
        self.fs_path = self.path("fs")
        random_tree(self.fs_path, self.rng, self.size() // 2)
        trig_fs = self.path("trigger-fs")
        os.makedirs(trig_fs)
        with open(os.path.join(trig_fs, "one"), "wb") as f:
            f.write(b"trigger")
        self.fs_id = c.post("/inventory/file-systems", {"name": "fs", "path": self.fs_path})["file_system"]["id"]
        tfs = c.post("/inventory/file-systems", {"name": "trigger-fs", "path": trig_fs})["file_system"]["id"]
        self.vf = c.post("/vaults", {"vault": {"name": "crash-fs", "billing": FS_BILLING, "resources": [
            {"id": self.fs_id, "type": FS_TYPE}, {"id": tfs, "type": FS_TYPE}]}})["vault"]["id"]
        self.triggers[self.vf] = (tfs, trig_fs)

    def new_disk(self) -> str:
        path = random_image(self.path("disk") + ".img", self.rng, self.size())
        rid = self.svc.client.post("/inventory/disks", {"name": f"d{self.counter}", "path": path})["disk"]["id"]
        self.disks[rid] = path
        return rid

    # -- clean (uninterrupted) operations --------------------------------------------------------
    def clean_backup(self, kind: str) -> str:
        bid, task_id = self.start_backup_of(kind)
        log = self.svc.wait_task(task_id)
        if log["status"] != "success":
            raise AssertionError(f"an uninterrupted backup failed: {log['error_info']}")
        self.learn(f"backup/{kind}", task_id, self.subject_size({"backup_id": bid}))
        return bid

    def start_backup_of(self, kind: str) -> tuple[str, str]:
        """Change the source, record what it holds now, start a backup of it."""
        if kind == "disk":
            rid = self.rng.choice(sorted(self.disks))
            scribble(self.disks[rid], self.rng, self.rng.randrange(1, 12))
            vault, fp = self.vd, sha256(self.disks[rid])
        else:
            rid = self.fs_id
            mutate_tree(self.fs_path, self.rng)
            vault, fp = self.vf, tree_digest(self.fs_path)
        b = self.svc.backup(vault, rid)
        self.held[b["id"]] = Held(kind, fp, rid, vault)
        return b["id"], b["task_id"]

    def available(self, kind: str | None = None) -> list[str]:
        out = []
        for vault in (self.vd, self.vf):
            for b in self.svc.backups(vault):
                if b["status"] == "available" and b["id"] in self.held and \
                        (kind is None or self.held[b["id"]].kind == kind):
                    out.append(b["id"])
        return sorted(out)

    def some_backup(self, kind: str) -> str:
        have = self.available(kind)
        return self.rng.choice(have) if have else self.clean_backup(kind)

    def delete_and_wait(self, backup_id: str) -> dict:
        return self.svc.wait_task(self.svc.client.delete(f"/backups/{backup_id}")["operation_log_id"])

    # -- the operations a kill interrupts: each returns (task id, what settle() needs) ------------
    def start_backup(self, t: Trial) -> tuple[str, dict]:
        if t.kind == "disk" and len(self.disks) < 4 and self.rng.random() < 0.25:
            rid = self.new_disk()
            self.svc.client.post(f"/vaults/{self.vd}/addresources", {"resources": [{"id": rid, "type": DISK_TYPE}]})
        bid, task_id = self.start_backup_of(t.kind)
        return task_id, {"backup_id": bid}

    def start_restore(self, t: Trial) -> tuple[str, dict]:
        bid = self.some_backup(t.kind)
        held = self.held[bid]
        if t.kind == "disk":
            scribble(self.disks[held.resource_id], self.rng)
            body = {"volume_id": held.resource_id}
            target = {"path": self.disks[held.resource_id]}
        else:
            target = self.new_fs_target()
            body = {"resource_id": target["id"]}
        tid = self.svc.client.post(f"/backups/{bid}/restore", {"restore": body})["operation_log_id"]
        return tid, {"backup_id": bid, **target}

    def start_create_disk(self, t: Trial) -> tuple[str, dict]:
        bid = self.some_backup("disk")
        path = self.path("new") + ".img"
        out = self.svc.client.post(f"/backups/{bid}/create-disk", {"name": f"new{self.counter}", "path": path})
        return out["operation_log_id"], {"backup_id": bid, "path": path, "id": out["disk_id"]}

    def start_delete(self, t: Trial) -> tuple[str, dict]:
        bid = self.some_backup(t.kind)
        return self.svc.client.delete(f"/backups/{bid}")["operation_log_id"], {"backup_id": bid}

    def start_gc(self, t: Trial) -> tuple[str, dict]:
        bid = self.some_backup(t.kind)
        vault = self.held[bid].vault_id
        before = {g["id"] for g in self.gc_tasks(vault)}
        log = self.delete_and_wait(bid)
        if log["status"] != "success":
            t.violations.append(f"an uninterrupted delete failed: {log['error_info']}")
        new = [g for g in self.gc_tasks(vault) if g["id"] not in before]
        if not new:
            raise AssertionError("deleting a backup queued no garbage collection")
        return new[0]["id"], {"backup_id": bid}

    def start_verify(self, t: Trial) -> tuple[str, dict]:
        bid = self.some_backup(t.kind)
        return self.svc.client.post(f"/backups/{bid}/verify", {})["operation_log_id"], {"backup_id": bid}

    def gc_tasks(self, vault: str) -> list[dict]:
        return self.svc.client.get("/operation-logs", operation_type="gc", vault_id=vault)["operation_logs"]

    def new_fs_target(self) -> dict:
        path = self.path("fs-target")
        os.makedirs(path)
        rid = self.svc.client.post("/inventory/file-systems", {"name": f"t{self.counter}", "path": path})
        return {"id": rid["file_system"]["id"], "path": path}

    def remove_resource(self, kind: str, rid: str, path: str) -> None:
        try:
            self.svc.client.delete(f"/inventory/{kind}/{rid}")
        except Exception as e:  # noqa: BLE001 - reported, the campaign goes on
            raise AssertionError(f"cannot remove {kind} {rid} after the trial: {e}") from None
        shutil.rmtree(path) if os.path.isdir(path) else os.path.exists(path) and os.unlink(path)

    # -- one trial ---------------------------------------------------------------------------------
    def trial(self, n: int, op: str, mode: str | None = None) -> Trial:
        # The victim changes one trial in three (a change costs an orderly restart of the service).
        if mode is None:
            mode = self.svc.mode if self.rng.random() < 2 / 3 else {"server": "worker", "worker": "server"}[self.svc.mode]
        t = Trial(n, op, mode)
        t.kind = "disk" if op == "create_disk" else self.rng.choice(("disk", "disk", "fs"))
        t0 = time.time()
        self.svc.switch(t.mode)
        gcs_before = {v: {g["id"] for g in self.gc_tasks(v)} for v in (self.vd, self.vf)}
        task_id, info = getattr(self, f"start_{op}")(t)
        t.size = self.subject_size(info)
        if op == "backup" and self.rng.random() < self.targeted:
            self.kill_at_manifest(t, task_id, info["backup_id"])
        else:
            self.kill_at_random(t, task_id)
        t1 = time.time()
        self.svc.recover()
        busy = self.svc.wait_quiet(LEASE_SECONDS * 4 + 120)
        t2 = time.time()
        if busy:
            t.violations.append(f"tasks still waiting/running after recovery: {busy}")
        final = self.svc.task(task_id)
        t.outcome = final["status"] + (f" ({final['error_info'].get('message', '')[:120]})"
                                       if final["status"] != "success" else "")
        self.settle(t, task_id, info)
        self.check(t, gcs_before)
        self.tidy(t)
        t.seconds = round(time.time() - t0, 1)
        t.notes.append(f"seconds: to the kill {t1 - t0:.1f}, recovery {t2 - t1:.1f}, checks {time.time() - t2:.1f}")
        return t

    def subject_size(self, info: dict) -> int:
        held = self.held.get(info.get("backup_id", ""))
        if held is None:
            return 0
        if held.kind == "disk":
            return os.path.getsize(self.disks.get(held.resource_id, "")) if held.resource_id in self.disks else 0
        return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(self.fs_path) for f in fs)

    def kill_at_random(self, t: Trial, task_id: str) -> None:
        """Early (before or as the task is claimed) one time in ten; else a random moment of its run,
        drawn from how long this operation took per MiB the last time it ran to completion here."""
        if self.rng.random() >= 0.1:
            deadline = time.time() + 60
            while time.time() < deadline and self.task_state(task_id)[0] == "waiting":
                time.sleep(0.002)  # the catalog, not the API: a short operation runs for milliseconds
            t.delay = round(self.rng.uniform(0, self.seconds_per_mib[f"{t.operation}/{t.kind}"] * max(1, t.size / MiB)), 3)
            time.sleep(t.delay)
        status, progress, started, ended = self.task_state(task_id)
        t.victim = self.svc.kill_victim()
        t.state_at_kill = status + (f" {progress}%" if status == "running" else "")
        if status in ("success", "failed"):  # too late: aim the next one by this run's duration
            self.learn(f"{t.operation}/{t.kind}", task_id, t.size)

    def kill_at_manifest(self, t: Trial, task_id: str, backup_id: str) -> None:
        vault = self.held[backup_id].vault_id
        manifest = os.path.join(self.svc.srv.data_dir, "objects", "vaults", vault, "manifests", backup_id)
        deadline = time.time() + 300
        while not os.path.exists(manifest) and time.time() < deadline and self.task_state(task_id)[0] in (
                "waiting", "running"):
            time.sleep(0.0005)
        status, progress, _, _ = self.task_state(task_id)
        t.victim = self.svc.kill_victim()
        t.delay = -1.0  # the moment the manifest appeared
        (row,) = self.svc.sql("SELECT status FROM backups WHERE id = :id", id=backup_id)
        t.state_at_kill = f"{status} {progress}% manifest stored, backup {row[0]}"

    def task_state(self, task_id: str) -> tuple:
        """(status, progress, started_at, ended_at) read from the catalog."""
        return tuple(self.svc.sql("SELECT status, progress, started_at, ended_at FROM tasks WHERE id = :id",
                                  id=task_id)[0])

    def learn(self, op: str, task_id: str, size: int) -> None:
        """How long the task took per MiB of its subject: where the next kill of ``op`` ("backup/disk",
        "restore/fs", ...) is aimed."""
        _, _, start, end = self.task_state(task_id)
        if start and end:
            if isinstance(start, str):  # SQLite hands DateTime columns back as text to a raw query
                start, end = datetime.fromisoformat(start), datetime.fromisoformat(end)
            self.seconds_per_mib[op] = max(0.001, (end - start).total_seconds() / max(1, size / MiB))

    def settle(self, t: Trial, task_id: str, info: dict) -> None:
        """What the interrupted operation left: check its result when it says it succeeded, and tidy."""
        c = self.svc.client
        status = self.svc.task(task_id)["status"]
        if t.operation == "restore" and status == "success":
            held = self.held[info["backup_id"]]
            got = fingerprint(held.kind, info["path"])
            if got != held.fingerprint:
                t.violations.append(f"restore of {info['backup_id']} reported success but the target differs")
        if t.operation == "restore" and t.kind == "fs":
            self.remove_resource("file-systems", info["id"], info["path"])
        if t.operation == "create_disk":
            disk = c.get(f"/inventory/disks/{info['id']}")["resource"] if self.resource_exists(info["id"]) else None
            if status == "success":
                if disk is None or sha256(info["path"]) != self.held[info["backup_id"]].fingerprint:
                    t.violations.append(f"create-disk from {info['backup_id']} succeeded but the new disk differs")
            elif disk is not None and os.path.exists(info["path"]):
                t.notes.append(f"failed create-disk left its image ({os.path.getsize(info['path'])} bytes) "
                               f"under a disk in status {disk['status']}")
            if disk is not None:
                self.remove_resource("disks", info["id"], info["path"])
            elif os.path.exists(info["path"]):
                t.notes.append("failed create-disk removed its disk but left the image file")
                os.unlink(info["path"])
        if t.operation in ("delete", "gc"):
            rows = [b for v in (self.vd, self.vf) for b in self.svc.backups(v) if b["id"] == info["backup_id"]]
            if rows and rows[0]["status"] == "error":  # an interrupted deletion: the user deletes it again
                t.notes.append("interrupted delete left the backup in error; deleted again")
                log = self.delete_and_wait(info["backup_id"])
                if log["status"] != "success":
                    t.violations.append(f"deleting again failed: {log['error_info']}")
                self.svc.wait_quiet(60)

    def resource_exists(self, rid: str) -> bool:
        return any(r["id"] == rid for r in self.svc.client.get("/inventory/disks", limit=1000)["resources"])

    # -- the checks ------------------------------------------------------------------------------
    def check(self, t: Trial, gcs_before: dict) -> None:
        v = t.violations
        for row in self.svc.sql("SELECT id, status FROM backups WHERE status IN ('protecting', 'restoring', "
                                "'deleting')"):
            v.append(f"backup {row[0]} stays {row[1]}")
        for row in self.svc.sql("SELECT id, status FROM resources WHERE status = 'restoring'"):
            v.append(f"resource {row[0]} stays {row[1]}")
        for vault in (self.vd, self.vf):
            for b in self.svc.backups(vault):
                if b["status"] == "available" and b["id"] not in self.held:
                    v.append(f"available backup {b['id']} was never made by the campaign")
        available = set(self.available())
        for held_id in [h for h in self.held if h not in available]:
            del self.held[held_id]  # failed or deleted: nothing to restore
        touched = self.vd if t.kind == "disk" else self.vf
        self.collect(t, touched, gcs_before[touched])
        for vault in (self.vd, self.vf):
            self.check_store(t, vault)
        for bid in self.available():
            self.check_restore(t, bid)

    def collect(self, t: Trial, vault: str, before: set) -> None:
        """Make sure a GC of the vault ran after the kill and recovery: the one recovery queued, else one
        that follows deleting the oldest backup (when there are many) or a tiny throwaway one."""
        done = [g for g in self.gc_tasks(vault) if g["id"] not in before and g["status"] == "success"]
        mine = [b for b in self.available() if self.held[b].vault_id == vault]
        if done and len(mine) <= self.max_backups:
            return
        if len(mine) > self.max_backups:
            oldest = min(mine, key=lambda b: self.svc.client.get(f"/backups/{b}")["backup"]["created_at"])
            log = self.delete_and_wait(oldest)
            del self.held[oldest]
        else:
            rid, _ = self.triggers[vault]
            b = self.svc.backup(vault, rid)
            if self.svc.wait_task(b["task_id"])["status"] != "success":
                t.violations.append("the throwaway backup that triggers a GC failed")
            log = self.delete_and_wait(b["id"])
        if log["status"] != "success":
            t.violations.append(f"an uninterrupted delete failed: {log['error_info']}")
        busy = self.svc.wait_quiet(120)
        if busy:
            t.violations.append(f"tasks still busy after the GC: {busy}")
        if not [g for g in self.gc_tasks(vault) if g["id"] not in before and g["status"] == "success"]:
            t.violations.append(f"no garbage collection of vault {vault} succeeded after the trial")

    def check_store(self, t: Trial, vault: str) -> None:
        v = t.violations
        names = [b for b in self.available() if self.held[b].vault_id == vault]
        view = read_store(self.svc, vault)
        for key, why in view.damaged.items():
            v.append(f"{vault}: unreadable object {key}: {why}")
        for name in sorted(set(view.manifests) - set(names)):
            v.append(f"{vault}: manifest {name} belongs to no available backup")
        for name in sorted(set(names) - set(view.manifests)):
            v.append(f"{vault}: available backup {name} has no manifest")
        refs = set().union(*(view.manifests.get(n, set()) for n in names))
        for key, records in view.packs.items():
            if not refs & records.keys():
                v.append(f"{vault}: orphan pack {key} ({len(records)} chunks, none referenced)")
        for rel in view.other:
            if rel != "config" and not rel.startswith("index/") and not rel.startswith("gc/condemned-"):
                v.append(f"{vault}: leftover object {rel}")
        expected, missing = expected_usage(view, names)
        if missing:
            v.append(f"{vault}: {len(missing)} referenced chunk(s) are in no pack")
        used = self.svc.client.get(f"/vaults/{vault}")["vault"]["used_bytes"]
        if used != expected:
            v.append(f"{vault}: used_bytes {used} but the available backups reference {expected} stored bytes")

    def tidy(self, t: Trial) -> None:
        """After the checks, do what a user would about error backups that still hold a manifest (the
        checks reported them): delete them, so that later trials start from a clean vault."""
        for row in self.svc.sql("SELECT id FROM backups WHERE status = 'error'"):
            if any(row[0] in v and "belongs to no available backup" in v for v in t.violations):
                log = self.delete_and_wait(row[0])
                t.notes.append(f"deleted error backup {row[0]} that kept its manifest: {log['status']}")
        self.svc.wait_quiet(120)

    def check_restore(self, t: Trial, bid: str) -> None:
        held = self.held[bid]
        if held.kind == "disk":
            path = self.disks[held.resource_id]
            scribble(path, self.rng, 2)
            tid = self.svc.client.post(f"/backups/{bid}/restore", {"restore": {"volume_id": held.resource_id}})
            target = None
        else:
            target = self.new_fs_target()
            path = target["path"]
            tid = self.svc.client.post(f"/backups/{bid}/restore", {"restore": {"resource_id": target["id"]}})
        log = self.svc.wait_task(tid["operation_log_id"])
        if log["status"] != "success":
            t.violations.append(f"available backup {bid} does not restore: {log['error_info']}")
        elif fingerprint(held.kind, path) != held.fingerprint:
            t.violations.append(f"available backup {bid} restores different bytes")
        else:
            self.learn(f"restore/{held.kind}", tid["operation_log_id"], self.subject_size({"backup_id": bid}))
        if target is not None:
            self.remove_resource("file-systems", target["id"], path)

    # -- the campaign -------------------------------------------------------------------------------
    def run(self, trials: int, out=None, echo=print, *, operations: list[str] | None = None,
            halves: bool = False) -> list[Trial]:
        """``operations``: this order instead of the six in turn, shuffled; ``halves``: the service is
        the victim in the first half of the trials, a worker process in the second (one restart
        between, for short runs), instead of a random victim that changes one trial in three."""
        self.setup()
        results = []
        order: list[str] = list(operations or [])
        while len(order) < trials:
            block = list(OPERATIONS)
            self.rng.shuffle(block)
            order += block
        try:
            for n, op in enumerate(order[:trials], 1):
                try:
                    t = self.trial(n, op, ("server" if 2 * n <= trials else "worker") if halves else None)
                except Exception as e:  # noqa: BLE001 - a harness failure is a finding too; stop here
                    t = Trial(n, op, self.svc.mode, violations=[f"trial aborted: {type(e).__name__}: {e}"],
                              notes=[traceback.format_exc()[-2000:]])
                    results.append(t)
                    record(out, t, json.dumps(asdict(t)), echo)
                    break
                results.append(t)
                record(out, t, f"[{self.catalog} seed {self.seed}] #{n} {op}/{t.kind} {t.mode} {t.size // MiB} MiB "
                       f"killed {t.state_at_kill} -> {t.outcome[:60]} {t.seconds}s "
                       f"{'OK' if not t.violations else 'VIOLATIONS: ' + '; '.join(t.violations)}", echo)
        finally:
            self.svc.close()
        return results


def summary(results: list[Trial]) -> str:
    per_op = Counter(t.operation for t in results)
    mid = Counter(t.operation for t in results if t.state_at_kill.startswith("running"))
    bad = Counter(t.operation for t in results if t.violations)
    modes = Counter(t.mode for t in results)
    lines = [f"{'operation':<12} {'trials':>6} {'killed mid-run':>14} {'with violations':>15}"]
    for op in OPERATIONS:
        lines.append(f"{op:<12} {per_op[op]:>6} {mid[op]:>14} {bad[op]:>15}")
    lines.append(f"{'total':<12} {len(results):>6} {sum(mid.values()):>14} {sum(bad.values()):>15}")
    lines.append(f"victims: {dict(modes)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return harness.main(__doc__, lambda w, c, s, small: CrashCampaign(w, c, s, small=small), "trials", 100,
                        summary, lambda t: f"trial {t.n} ({t.operation}/{t.kind}, {t.mode})", argv)


if __name__ == "__main__":
    sys.exit(main())
