"""Corruption campaign: damage one stored object or one catalog row at a time, then check that
``verify`` reports it, that no restore returns wrong bytes, and that the error names what is damaged.

Set-up: three vaults (disks encrypted, disks unencrypted, a file system), two backups of each resource
(the second incremental), SHA-256 of every source recorded when its backup was taken. Each fault is one
of:

- ``chunk``: one byte flipped inside the record of a chunk a backup references (the location the
  index gives);
- ``tree-catalog``: the same, in a chunk of a file-system backup's catalog;
- ``pack``: a byte flipped anywhere in a pack, the pack truncated at a random length, or deleted;
- ``index``: an index object with a byte flipped, truncated, or deleted;
- ``manifest``: a manifest with a byte flipped, truncated, or deleted;
- ``catalog-row``: one field of an available backup's row that says which data it is (``id``,
  ``vault_id``, ``resource_id``, ``resource_type``, ``resource_size_bytes``) changed: a character
  flipped, another vault/resource/type named, or another size.

**The rule.** A fault is *used* by a backup when restoring that backup reads the damaged bytes: a
record of a chunk the backup references that has no other intact copy, an index object (damaged or
deleted: by the backups that reference a chunk only it locates; a verify checks the index objects that
list the packs it read, not every one of the vault), the backup's manifest, or the backup's catalog row. Every backup
that uses a fault must fail ``verify``, and the failure (its message or ``extra_info.verify``) must name
what is damaged: the chunk's digest or its pack's id, the index object, the backup's manifest/id, or
the catalog field. Faults no backup uses (a pack trailer, a record no backup references) may go
unreported. Whatever the fault, a restore of any backup either fails or gives back exactly the bytes
recorded at backup time. After each fault the damaged object or row is put back, and every so often
the campaign checks that all backups verify clean again.

Run: ``PYTHONPATH=src python -m tools.campaigns.corruption --faults 200 --seed 1 --catalog sqlite``
(see tools/README.md). Exit status 1 when any check failed; every fault is a JSON line in ``--out``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
import sys
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field

from opencbr.engine.chunks.locations import decode_index
from opencbr.engine.chunks.store import UNLISTED_PACKS
from opencbr.engine.tree.common import load_index as load_tree_index
from tests.support.disks import MiB
from tools.campaigns import harness
from tools.campaigns.harness import (
    BILLING,
    DISK_TYPE,
    FS_BILLING,
    FS_TYPE,
    Campaign,
    Held,
    fingerprint,
    mutate_tree,
    random_image,
    random_tree,
    record,
    scribble,
)

TARGETS = ("chunk", "tree-catalog", "pack", "index", "manifest", "catalog-row")
ROW_FIELDS = ("id", "vault_id", "resource_id", "resource_type", "resource_size_bytes")
_ENTRY = struct.Struct("<32sII")


@dataclass
class Fault:
    n: int
    target: str
    kind: str = ""  # flip | truncate | delete | <field name>
    where: str = ""  # object key, or "backups.<field> of <id>"
    detail: str = ""
    used_by: list[str] = field(default_factory=list)
    reported_by: list[str] = field(default_factory=list)
    restores: dict[str, str] = field(default_factory=dict)  # backup id -> exact | error | WRONG BYTES
    false_alarms: list[str] = field(default_factory=list)  # unaffected backups verify failed on
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class VaultModel:
    """Where a vault's chunks are, read once from the pristine store."""

    vault_id: str
    root: str  # the vault's directory in the local object store
    refs: dict[str, set[bytes]] = field(default_factory=dict)  # backup id -> digests
    locations: dict[bytes, list[tuple[str, int, int]]] = field(default_factory=dict)  # -> (pack key, off, len)
    index_digests: dict[str, set[bytes]] = field(default_factory=dict)  # index object -> digests it locates
    pack_records: dict[str, list[tuple[bytes, int, int]]] = field(default_factory=dict)
    catalog_digests: dict[str, set[bytes]] = field(default_factory=dict)  # tree backup -> its catalog chunks

    def users(self, digests: set[bytes]) -> list[str]:
        return sorted(b for b, r in self.refs.items() if r & digests)

    def only_copy(self, digests: set[bytes], lost: set[tuple[str, int, int]]) -> set[bytes]:
        """The digests whose every copy is among the ``lost`` locations."""
        return {d for d in digests if all(loc in lost for loc in self.locations.get(d, []))}


class CorruptionCampaign(Campaign):
    def __init__(self, workdir: str, catalog: str, seed: int, *, small: bool = False):
        super().__init__(workdir, catalog, seed, (4 * MiB, 16 * MiB) if small else (8 * MiB, 64 * MiB))
        self.paths: dict[str, str] = {}  # resource id -> disk image / directory
        self.models: dict[str, VaultModel] = {}

    # -- set-up ---------------------------------------------------------------------------------
    def setup(self) -> None:
        self.svc.start("server")
        c = self.svc.client
        plan = [("disk", True, 2), ("disk", False, 1), ("fs", True, 1)]
        for kind, encrypted, count in plan:
            rids = []
            for _ in range(count):
                if kind == "disk":
                    p = random_image(self.path("disk") + ".img", self.rng, self.size())
                    rid = c.post("/inventory/disks", {"name": f"d{self.counter}", "path": p})["disk"]["id"]
                else:
                    p = self.path("fs")
                    random_tree(p, self.rng, self.size())
                    rid = c.post("/inventory/file-systems", {"name": "fs", "path": p})["file_system"]["id"]
                self.paths[rid] = p
                rids.append(rid)
            rtype = DISK_TYPE if kind == "disk" else FS_TYPE
            vault = c.post("/vaults", {"vault": {
                "name": f"v{self.counter}", "billing": BILLING if kind == "disk" else FS_BILLING,
                "encrypted": encrypted, "resources": [{"id": r, "type": rtype} for r in rids]}})["vault"]["id"]
            for rid in rids:
                for generation in range(2):
                    if generation:
                        scribble(self.paths[rid], self.rng, 6) if kind == "disk" else \
                            mutate_tree(self.paths[rid], self.rng)
                    fp = fingerprint(kind, self.paths[rid])
                    b = self.svc.backup(vault, rid)
                    log = self.svc.wait_task(b["task_id"])
                    if log["status"] != "success":
                        raise AssertionError(f"set-up backup failed: {log['error_info']}")
                    self.held[b["id"]] = Held(kind, fp, rid, vault)
            self.models[vault] = self.model(vault)

    def model(self, vault: str) -> VaultModel:
        repo = self.svc.repository(vault)
        m = VaultModel(vault, os.path.join(self.svc.srv.data_dir, "objects", "vaults", vault))
        for rel in repo.chunks.list_index_objects():
            digests = set()
            for pack_id, ents in decode_index(repo.chunks.sealer, repo.store.get(repo.prefix + rel), rel):
                key = f"data/{pack_id[:2]}/{pack_id}"
                for d, off, ln in _ENTRY.iter_unpack(ents):
                    m.locations.setdefault(d, []).append((key, off, ln))
                    m.pack_records.setdefault(key, []).append((d, off, ln))
                    digests.add(d)
            m.index_digests[rel] = digests
        for bid, h in self.held.items():
            if h.vault_id == vault:
                m.refs[bid] = repo.chunks.read_manifest(bid).ref_set()
                if h.kind == "fs":
                    m.catalog_digests[bid] = {c.digest for c in load_tree_index(repo.chunks, bid).catalog}
        return m

    # -- faults ---------------------------------------------------------------------------------
    def inject(self, f: Fault):
        """Damage something; returns (what to call to undo it, {backup: names that count as naming it})."""
        if f.target == "catalog-row":
            return self.damage_row(f)
        vault = self.rng.choice([v for v, m in self.models.items() if m.catalog_digests]) \
            if f.target == "tree-catalog" else self.rng.choice(sorted(self.models))
        m = self.models[vault]
        if f.target in ("chunk", "tree-catalog"):
            pool = m.catalog_digests if f.target == "tree-catalog" else m.refs
            bid = self.rng.choice(sorted(pool))
            d = self.rng.choice(sorted(pool[bid]))
            key, off, ln = self.rng.choice(m.locations[d])
            f.kind, f.where = "flip", key
            at = off + self.rng.randrange(ln)
            f.detail = f"chunk {d.hex()[:16]}.. byte {at - off} of {ln}"
            undo = self.flip(m, key, at)
            return undo, self.name_users(m, m.only_copy({d}, {(key, off, ln)}), {key.rsplit("/", 1)[1]})
        if f.target == "pack":
            key = self.rng.choice(sorted(m.pack_records))
            f.kind, f.where = self.rng.choice(("flip", "truncate", "delete")), key
            size = os.path.getsize(os.path.join(m.root, key))
            records = m.pack_records[key]
            if f.kind == "flip":
                at = self.rng.randrange(size)
                lost = {(key, o, n) for _, o, n in records if o <= at < o + n}
                f.detail = f"byte {at} of {size}" + ("" if lost else " (trailer)")
                undo = self.flip(m, key, at)
            elif f.kind == "truncate":
                keep = self.rng.randrange(size)
                lost = {(key, o, n) for _, o, n in records if o + n > keep}
                f.detail = f"to {keep} of {size} bytes"
                undo = self.truncate(m, key, keep)
            else:
                lost = {(key, o, n) for _, o, n in records}
                undo = self.delete(m, key)
            digests = {d for d, o, n in records if (key, o, n) in lost}
            return undo, self.name_users(m, m.only_copy(digests, lost), {key.rsplit("/", 1)[1]})
        if f.target == "index":
            rel = self.rng.choice(sorted(m.index_digests))
            f.kind, f.where = self.rng.choice(("flip", "truncate", "delete")), rel
            # used by the backups that reference a chunk only it locates (a verify checks the index
            # objects that list the packs it read, not every one of the vault)
            others = set().union(*(v for k, v in m.index_digests.items() if k != rel))
            users = self.name_users(m, m.index_digests[rel] - others, {rel.rsplit("/", 1)[1]})
            if f.kind == "delete":
                # a deleted object looks like one GC replaced, so nothing can name it: verify reads its
                # chunks from the packs' trailers and says that no index object lists some packs
                users = {b: names | {UNLISTED_PACKS} for b, names in users.items()}
                return self.delete(m, rel), users
            size = os.path.getsize(os.path.join(m.root, rel))
            if f.kind == "flip":
                at = self.rng.randrange(size)
                f.detail = f"byte {at} of {size}"
                undo = self.flip(m, rel, at)
            else:
                keep = self.rng.randrange(size)
                f.detail = f"to {keep} of {size} bytes"
                undo = self.truncate(m, rel, keep)
            return undo, users
        bid = self.rng.choice(sorted(m.refs))
        rel = f"manifests/{bid}"
        f.kind, f.where = self.rng.choice(("flip", "truncate", "delete")), rel
        size = os.path.getsize(os.path.join(m.root, rel))
        if f.kind == "flip":
            at = self.rng.randrange(size)
            f.detail = f"byte {at} of {size}"
            undo = self.flip(m, rel, at)
        elif f.kind == "truncate":
            keep = self.rng.randrange(size)
            f.detail = f"to {keep} of {size} bytes"
            undo = self.truncate(m, rel, keep)
        else:
            undo = self.delete(m, rel)
        return undo, {bid: {bid}}

    def name_users(self, m: VaultModel, lost: set[bytes], names: set[str]) -> dict[str, set[str]]:
        """Each backup that references a lost digest, with what naming the damage means for it: the
        pack (or index object) named, or one of the lost digests it references."""
        return {b: names | {d.hex() for d in m.refs[b] & lost} for b in m.users(lost)}

    def flip(self, m: VaultModel, rel: str, at: int):
        path = os.path.join(m.root, rel)
        with open(path, "r+b") as fh:
            fh.seek(at)
            old = fh.read(1)
            fh.seek(at)
            fh.write(bytes([old[0] ^ self.rng.randrange(1, 256)]))

        def undo():
            with open(path, "r+b") as fh:
                fh.seek(at)
                fh.write(old)
        return undo

    def truncate(self, m: VaultModel, rel: str, keep: int):
        path = os.path.join(m.root, rel)
        with open(path, "rb") as fh:
            data = fh.read()
        with open(path, "r+b") as fh:
            fh.truncate(keep)
        return lambda: self.put_back(path, data)

    def delete(self, m: VaultModel, rel: str):
        path = os.path.join(m.root, rel)
        with open(path, "rb") as fh:
            data = fh.read()
        os.unlink(path)
        return lambda: self.put_back(path, data)

    @staticmethod
    def put_back(path: str, data: bytes) -> None:
        with open(path, "wb") as fh:
            fh.write(data)

    def damage_row(self, f: Fault):
        bid = self.rng.choice(sorted(self.held))
        h = self.held[bid]
        col = self.rng.choice(ROW_FIELDS)
        (old,) = self.svc.sql(f"SELECT {col} FROM backups WHERE id = :id", id=bid)[0]
        if col == "vault_id":
            new = self.rng.choice([v for v in self.models if v != old])
        elif col == "resource_id":
            others = [r for r in self.paths if r != old]
            new = self.rng.choice(others) if self.rng.random() < 0.5 else flip_char(self.rng, old)
        elif col == "resource_type":
            new = {DISK_TYPE: FS_TYPE, FS_TYPE: DISK_TYPE}[old] if self.rng.random() < 0.5 else flip_char(self.rng, old)
        elif col == "resource_size_bytes":
            step = self.rng.randrange(1, 1 << 20) * 4096
            # (a file system backed up before its size was counted has 0: a step down would change nothing)
            new = old - step if self.rng.random() < 0.5 and old >= step else old + step
        else:
            new = flip_char(self.rng, old)
        f.kind, f.where, f.detail = col, f"backups.{col} of {bid}", f"{old!r} -> {new!r}"
        self.svc.sql(f"UPDATE backups SET {col} = :new WHERE id = :id", new=new, id=bid)
        now_id = new if col == "id" else bid
        if col == "id":
            self.held[now_id] = self.held.pop(bid)
            self.models[h.vault_id].refs[now_id] = self.models[h.vault_id].refs.pop(bid)

        def undo():
            self.svc.sql(f"UPDATE backups SET {col} = :old WHERE id = :id", old=old, id=now_id)
            if col == "id":
                self.held[bid] = self.held.pop(now_id)
                self.models[h.vault_id].refs[bid] = self.models[h.vault_id].refs.pop(now_id)
        return undo, {now_id: {col, now_id}}

    # -- checks ---------------------------------------------------------------------------------
    def run_fault(self, n: int, target: str) -> Fault:
        f = Fault(n, target)
        t0 = time.time()
        undo, users = self.inject(f)
        try:
            f.used_by = sorted(users)
            vault = self.held[f.used_by[0]].vault_id if f.used_by else None
            bystanders = [b for b in self.held if b not in users and (vault is None or self.held[b].vault_id == vault)]
            extra = [self.rng.choice(sorted(bystanders))] if bystanders else []
            verdicts = self.verify_all(f.used_by + extra)
            for bid in f.used_by:
                ok, text = verdicts[bid]
                if ok:
                    f.violations.append(f"verify of {bid} passed although it uses the damaged {f.where}")
                elif not any(name in text for name in users[bid]):
                    f.violations.append(f"verify of {bid} failed without naming the damage "
                                        f"(expected one of {sorted(users[bid])[:3]}): {text[:300]}")
                else:
                    f.reported_by.append(bid)
            for bid in extra:
                if not verdicts[bid][0]:
                    f.false_alarms.append(f"{bid}: {verdicts[bid][1][:200]}")
            for bid in f.used_by + extra:
                f.restores[bid] = self.restore(bid, whole=bid in users)
                if f.restores[bid] == "WRONG BYTES":
                    f.violations.append(f"restore of {bid} succeeded with wrong bytes")
        finally:
            undo()
        f.seconds = round(time.time() - t0, 1)
        return f

    def verify_all(self, ids: list[str]) -> dict[str, tuple[bool, str]]:
        """Start verify of each backup at once, then collect (passed, everything it said)."""
        tasks = {}
        for bid in ids:
            try:
                tasks[bid] = self.svc.client.post(f"/backups/{bid}/verify", {})["operation_log_id"]
            except Exception as e:  # noqa: BLE001 - refusing to verify a damaged backup is a report too
                tasks[bid] = e
        out = {}
        for bid, tid in tasks.items():
            if isinstance(tid, Exception):
                out[bid] = (False, f"verify refused: {tid}")
                continue
            log = self.svc.wait_task(tid)
            text = json.dumps(log.get("error_info", {})) + json.dumps(log.get("extra_info", {}).get("verify", {}))
            out[bid] = (log["status"] == "success", text)
        return out

    def restore(self, bid: str, whole: bool) -> str:
        """Restore a backup and compare: ``exact``, ``error`` or ``WRONG BYTES``. A disk backup goes onto
        its disk (a restore there reads only the blocks that differ) or, ``whole``, into a new disk
        (every block is read)."""
        h = self.held[bid]
        if h.kind == "disk" and whole:
            return self.restore_new_disk(bid, h)
        c = self.svc.client
        target = None
        try:
            if h.kind == "disk":
                path = self.paths[h.resource_id]
                scribble(path, self.rng, 2)
                tid = c.post(f"/backups/{bid}/restore", {"restore": {"volume_id": h.resource_id}})
            else:
                path = self.path("fs-target")
                os.makedirs(path)
                target = c.post("/inventory/file-systems", {"name": f"t{self.counter}", "path": path})["file_system"]
                tid = c.post(f"/backups/{bid}/restore", {"restore": {"resource_id": target["id"]}})
        except Exception:  # noqa: BLE001 - refused: no bytes returned
            return "error (refused)"
        try:
            log = self.svc.wait_task(tid["operation_log_id"])
            if log["status"] != "success":
                return "error"
            return "exact" if fingerprint(h.kind, path) == h.fingerprint else "WRONG BYTES"
        finally:
            if target is not None:
                c.delete(f"/inventory/file-systems/{target['id']}")
                shutil.rmtree(path)

    def restore_new_disk(self, bid: str, h: Held) -> str:
        """Create a disk from the backup; it must hold the backed-up bytes (then zeros if the catalog
        asked for a larger disk)."""
        c = self.svc.client
        path = self.path("new") + ".img"
        try:
            out = c.post(f"/backups/{bid}/create-disk", {"name": f"new{self.counter}", "path": path})
        except Exception:  # noqa: BLE001 - refused: no bytes returned
            return "error (refused)"
        try:
            log = self.svc.wait_task(out["operation_log_id"])
            if log["status"] != "success":
                return "error"
            size = os.path.getsize(self.paths[h.resource_id])  # campaign disks never change size
            with open(path, "rb") as fh:
                head = hashlib.sha256(fh.read(size)).hexdigest()
                tail_is_zero = all(not any(block) for block in iter(lambda: fh.read(1 << 20), b""))
            return "exact" if head == h.fingerprint and tail_is_zero else "WRONG BYTES"
        finally:
            if any(r["id"] == out["disk_id"] for r in c.get("/inventory/disks", limit=1000)["resources"]):
                c.delete(f"/inventory/disks/{out['disk_id']}")
            if os.path.exists(path):
                os.unlink(path)

    def all_clean(self) -> list[str]:
        """After repairs every backup verifies clean again (else the campaign's own undo is wrong)."""
        bad = []
        for bid, (ok, text) in self.verify_all(sorted(self.held)).items():
            if not ok:
                bad.append(f"backup {bid} does not verify clean after the repairs: {text[:300]}")
        return bad

    # -- the campaign -------------------------------------------------------------------------------
    def run(self, faults: int, out=None, echo=print) -> list[Fault]:
        self.setup()
        results: list[Fault] = []
        try:
            control = self.all_clean()
            if control:
                f = Fault(0, "control", violations=control)
                echo(f"control: backups do not verify clean before any fault: {control}")
                results.append(f)
                return results
            order: list[str] = []
            while len(order) < faults:
                block = list(TARGETS)
                self.rng.shuffle(block)
                order += block
            for n, target in enumerate(order[:faults], 1):
                try:
                    f = self.run_fault(n, target)
                except Exception as e:  # noqa: BLE001 - a harness failure is a finding too; stop here
                    f = Fault(n, target, violations=[f"fault aborted: {type(e).__name__}: {e}",
                                                     traceback.format_exc()[-1500:]])
                    results.append(f)
                    record(out, f, json.dumps(asdict(f)), echo)
                    break
                if n % 25 == 0 or n == faults:
                    f.violations += self.all_clean()
                results.append(f)
                record(out, f, f"[{self.catalog} seed {self.seed}] #{n} {target}/{f.kind} {f.where} {f.detail}: "
                       f"used by {len(f.used_by)}, reported by {len(f.reported_by)}, restores "
                       f"{dict(Counter(f.restores.values()))} {f.seconds}s "
                       f"{'OK' if not f.violations else 'VIOLATIONS: ' + '; '.join(f.violations)}", echo)
        finally:
            self.svc.close()
        return results


def flip_char(rng: random.Random, value: str) -> str:
    i = rng.randrange(len(value))
    alphabet = "0123456789abcdef" if value[i] in "0123456789abcdef" else "ABCDEFGHIJKLMNOPQRSTUVWXYZ:"
    return value[:i] + rng.choice([ch for ch in alphabet if ch != value[i]]) + value[i + 1:]


def summary(results: list[Fault]) -> str:
    lines = [f"{'target':<13} {'faults':>6} {'used':>5} {'reported':>8} {'restores exact/error/WRONG':>27} "
             f"{'violations':>10}"]
    for target in TARGETS:
        rs = [f for f in results if f.target == target]
        used = sum(1 for f in rs if f.used_by)
        reported = sum(1 for f in rs if f.used_by and len(f.reported_by) == len(f.used_by))
        outcomes = Counter(v.split(" ")[0] for f in rs for v in f.restores.values())
        lines.append(f"{target:<13} {len(rs):>6} {used:>5} {reported:>8} "
                     f"{outcomes['exact']:>11}/{outcomes['error']}/{outcomes['WRONG']:<7} "
                     f"{sum(1 for f in rs if f.violations):>10}")
    kinds = Counter(f"{f.target}/{f.kind}" for f in results)
    lines.append("by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(kinds.items())))
    lines.append(f"false alarms on backups the rule calls unaffected: {sum(len(f.false_alarms) for f in results)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return harness.main(__doc__, lambda w, c, s, small: CorruptionCampaign(w, c, s, small=small), "faults", 200,
                        summary, lambda f: f"fault {f.n} ({f.target}/{f.kind} {f.where} {f.detail})", argv)


if __name__ == "__main__":
    sys.exit(main())
