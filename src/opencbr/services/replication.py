"""Cross-region replication (guide 3.6, 4.4): a backup of this installation copied into a replication
vault of a linked region (another OpenCBR installation, ``services.regions``).

- The API (:func:`copy_backup`, :func:`copy_checkpoint`) checks the guide's constraints -- those only
  the destination knows with a ``check`` request over the region link (:func:`_ask_destination`) -- and
  queues one ``replication`` task per backup, with a replication record on the source backup. A policy's
  replication carries the policy's retention rule to the destination, which prunes its replicas by it.
- A worker runs the task (:func:`run_replication`): it connects to the destination's replication
  receiver, names the source backup and the destination vault, and gets back the destination vault's
  keys and chunking parameters for this task only (the trust model of an agent). Then the engine's own
  ``backup_disk`` runs over the source backup's image (:class:`BackupImageSource`) into a ``RemoteSink``:
  the blocks are re-cut and re-encrypted under the destination's keys and only the chunks the
  destination vault lacks travel.
- The receiver (:func:`receive`, in a worker process of the destination) checks the link's credential
  and the tenant's account, creates the replica rows (``protecting``), serves the chunk messages with the
  engine's ``serve_backup`` and publishes the replica only once every disk is recorded; anything else
  withdraws it (no partial replica is ever ``available``) but keeps the chunks that arrived, so that a
  retry sends only what is missing (``keep_partial``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencbr.agentlink.channel import LinkError, RemoteError, error_answer
from opencbr.catalog.models import Account, Backup, Checkpoint, Policy, Project, Region, ReplicationRecord, Task, Vault
from opencbr.domain import backup as B
from opencbr.domain import resource as R
from opencbr.domain.errors import CBRError, Forbidden, InvalidParameter, NotFound, StateConflict
from opencbr.domain.retention import CurrentRetention
from opencbr.engine import tree as engine_tree
from opencbr.engine.chunks.crypto import ZERO_DIGEST
from opencbr.engine.chunks.reader import read_span, spans_of
from opencbr.engine.disk.backup import backup_disk
from opencbr.engine.disk.copy import copy_disk_backup
from opencbr.engine.disk.fixed_index import FixedIndex
from opencbr.engine.errors import EngineError, InvalidArgument
from opencbr.engine.remote import BackupScope, serve_backup
from opencbr.engine.remote.client import RemoteFailure
from opencbr.engine.remote.vault import VaultAccess, vault_request
from opencbr.services import memberships, quotas, regions, retention, tasks
from opencbr.services.context import ServiceContext
from opencbr.services.lookups import data_backups, get_backup, get_vault
from opencbr.services.policies import spec_of
from opencbr.services.principal import Principal
from opencbr.services.progress import TaskProgress
from opencbr.services.repositories import repository

log = logging.getLogger("opencbr.replication")

REPLICATING, AVAILABLE, FAILED = "replicating", "available", "failed"
GB = 1024**3
RECEIVER_OWNER = "replication-receiver"
MAX_CHECKED = 1000  # source backups one check asks about
CHECK_TIMEOUT = 10.0  # seconds the API waits for the destination's answer to a check


class ReplicationFailed(CBRError):
    code = "BackupService.6950"
    status = 409


class SourceDeleted(ReplicationFailed):
    """The source backup was deleted (or began to be) while its replica was being made."""

    code = "BackupService.6964"


#: What each kind of vault holds (guide 3.6, 4.4: server, disk and SFS Turbo replication vaults).
_KIND_OF_VAULT = {"server": R.SERVER, "disk": R.DISK, "turbo": R.FILE_SYSTEM}


# ------------------------------------------------------------------------------------ capabilities
def capabilities(s: Session, ctx: ServiceContext) -> dict:
    """show_replication_capabilities: this region and the linked regions it replicates into."""
    names = [r.name for r in regions.list_regions(s)]
    return {"regions": [{"name": ctx.settings.region, "replication_destinations": names}]}


# ------------------------------------------------------------------------------------ requests (API)
def _target(body: object) -> dict:
    if not isinstance(body, dict):
        raise InvalidParameter("the request body needs a replicate object")
    for k in ("destination_project_id", "destination_region", "destination_vault_id"):
        if not isinstance(body.get(k), str) or not body[k]:
            raise InvalidParameter(f"replicate.{k} is required")
    if body.get("cross_account_urn"):
        raise InvalidParameter("cross-account replication is not supported; replicas go into the same account "
                               "of the destination region")
    return body


def check_replicable(s: Session, b: Backup, vault: Vault) -> None:
    """Guide 3.6/4.4 (and 4.4's SFS Turbo rules): Available top-level backups of backup vaults; server
    backups with their system disk; replicas (and anything in a replication vault) cannot be replicated
    again."""
    if b.parent_id is not None:
        raise InvalidParameter("replicate the server backup, not one of its disks", code="BackupService.6953")
    if b.image_type == "replication" or vault.protect_type == "replication":
        raise InvalidParameter("a replica, or a backup in a replication vault, cannot be replicated again",
                               code="BackupService.6954")
    if b.status != B.AVAILABLE:
        raise StateConflict(f"backup {b.name} is {b.status}; only Available backups are replicated",
                            code="BackupService.6955")
    if b.resource_type == R.SERVER and not any(c.disk_role == "system" for c in data_backups(s, b)):
        raise InvalidParameter("only server backups that contain the system disk can be replicated",
                               code="BackupService.6957")


def _queue(s: Session, ctx: ServiceContext, p: Principal, b: Backup, vault: Vault, region: Region, target: dict,
           *, auto_trigger: bool = False, policy_id: str = "") -> ReplicationRecord:
    busy = s.scalar(select(ReplicationRecord.id).where(
        ReplicationRecord.source_backup_id == b.id, ReplicationRecord.destination_region == region.name,
        ReplicationRecord.status == REPLICATING))
    if busy:
        raise StateConflict(f"backup {b.name} is being replicated to {region.name} already",
                            code="BackupService.6958")
    now = ctx.now()
    rec = ReplicationRecord(project_id=p.project_id, vault_id=vault.id, source_backup_id=b.id,
                            source_checkpoint_id=b.checkpoint_id, destination_region=region.name,
                            destination_project_id=target["destination_project_id"],
                            destination_vault_id=target["destination_vault_id"], status=REPLICATING,
                            auto_trigger=auto_trigger, created_at=now, updated_at=now)
    s.add(rec)
    s.flush()
    task = tasks.new_task(s, project_id=p.project_id, operation_type="replication", now=now, vault_id=vault.id,
                          vault_name=vault.name, resource_id=b.resource_id, resource_name=b.resource_name,
                          resource_type=b.resource_type, checkpoint_id=b.checkpoint_id, policy_id=policy_id,
                          provider_id=R.PROVIDER_ID.get(b.resource_type, ""), request_id=p.request_id,
                          params={"record_id": rec.id, "name": target.get("name") or "",
                                  "description": target.get("description") or "",
                                  "retention_rule": _policy_rule(s, policy_id) if auto_trigger else ""},
                          extra_info={"replication": _op_info(ctx, rec, b)})
    rec.task_id = task.id
    return rec


def _policy_rule(s: Session, policy_id: str) -> str:
    """The replication policy's retention (guide 5.3: "how backup replicas will be retained in the
    destination region"), encoded with its long-term levels; it travels with the replica, and the
    destination prunes by it."""
    policy = s.get(Policy, policy_id) if policy_id else None
    return spec_of(policy).current_retention().encode() if policy is not None else ""


def _op_info(ctx: ServiceContext, rec: ReplicationRecord, b: Backup, dest_name: str = "") -> dict:
    return {"source_backup_id": rec.source_backup_id, "source_checkpoint_id": rec.source_checkpoint_id,
            "source_project_id": rec.project_id, "source_region": ctx.settings.region,
            "source_backup_name": b.name, "destination_backup_id": rec.destination_backup_id,
            "destination_checkpoint_id": rec.destination_checkpoint_id,
            "destination_project_id": rec.destination_project_id, "destination_region": rec.destination_region,
            "destination_backup_name": dest_name}


def copy_backup(s: Session, ctx: ServiceContext, p: Principal, backup_id: str, body: object) -> dict:
    """copy_backup: replicate one backup (returns the API's ``replication``)."""
    p.require_write()
    target = _target(body)
    b = get_backup(s, p.project_id, backup_id)
    vault = s.get(Vault, b.vault_id)
    check_replicable(s, b, vault)
    region = regions.region(s, target["destination_region"])
    there = _ask_destination(s, ctx, p, region, target, b.resource_type, [b.id])
    if b.id in there:
        raise StateConflict(f"backup {b.name} has a replica in region {region.name} already; a backup is replicated "
                            "again only after its replica there was deleted", code="BackupService.6962")
    rec = _queue(s, ctx, p, b, vault, region, target)
    return {"backup_id": b.id, "replication_record_id": rec.id, "project_id": p.project_id,
            "provider_id": R.PROVIDER_ID.get(b.resource_type, ""), "source_region": ctx.settings.region,
            "destination_project_id": rec.destination_project_id, "destination_region": region.name,
            "destination_vault_id": rec.destination_vault_id}


def copy_checkpoint(s: Session, ctx: ServiceContext, p: Principal, body: object, *, policy_id: str = "") -> dict:
    """copy_checkpoint: replicate the vault's Available backups that have no replica in the destination
    region yet (none replicating or replicated; failed ones again)."""
    p.require_write()
    target = _target(body)
    if not isinstance(target.get("vault_id"), str):
        raise InvalidParameter("replicate.vault_id is required")
    auto = bool(target.get("auto_trigger"))
    region = regions.region(s, target["destination_region"])
    vault = get_vault(s, p.project_id, target["vault_id"])
    if vault.protect_type == "replication":
        raise InvalidParameter("a replication vault cannot be replicated again", code="BackupService.6954")
    done = set(s.scalars(select(ReplicationRecord.source_backup_id).where(
        ReplicationRecord.vault_id == vault.id, ReplicationRecord.destination_region == region.name,
        ReplicationRecord.status.in_((REPLICATING, AVAILABLE)))))
    if auto:  # the once-ever rule (5.3): a backup is replicated automatically at most once per region
        done |= set(s.scalars(select(ReplicationRecord.source_backup_id).where(
            ReplicationRecord.vault_id == vault.id, ReplicationRecord.destination_region == region.name,
            ReplicationRecord.auto_trigger.is_(True), ReplicationRecord.status != FAILED)))
    todo = []
    for b in s.scalars(select(Backup).where(Backup.vault_id == vault.id, Backup.parent_id.is_(None),
                                            Backup.status == B.AVAILABLE).order_by(Backup.created_at)):
        if b.id in done:
            continue
        try:
            check_replicable(s, b, vault)
        except CBRError:
            continue  # (a server backup without its system disk: not replicable, skipped)
        todo.append(b)
    kind = _KIND_OF_VAULT.get(vault.object_type, R.SERVER)
    there = _ask_destination(s, ctx, p, region, target, kind, [b.id for b in todo])
    made = []
    for b in todo:
        if b.id in there:
            continue  # (one replica per backup per region: it has one there)
        rec = _queue(s, ctx, p, b, vault, region, target, auto_trigger=auto, policy_id=policy_id)
        made.append({"backup_id": b.id, "replication_record_id": rec.id})
    return {"backups": made, "project_id": p.project_id, "provider_id": R.PROVIDER_ID.get(kind, ""),
        "source_region": ctx.settings.region, "vault_id": vault.id,
        "destination_project_id": target["destination_project_id"], "destination_region": region.name,
        "destination_vault_id": target["destination_vault_id"]}


def _ask_destination(s: Session, ctx: ServiceContext, p: Principal, region: Region, target: dict, kind: str,
                     backup_ids: list[str]) -> set[str]:
    """Guide 3.6/4.4 rules only the destination can check, answered before anything is queued: the
    destination vault (a replication vault of this kind, with room, in a project of the tenant's
    account) -- a refusal is raised with the destination's code and status -- and which of
    ``backup_ids`` have a replica there already (returned). A destination that cannot be reached, or a
    link it does not accept, is no answer (an empty set): the task then fails with the reason."""
    account = s.get(Account, s.get(Project, p.project_id).account_id)
    header = {"op": "check", "source_region": ctx.settings.region, "source_account": account.name,
              "destination_project_id": target["destination_project_id"],
              "destination_vault_id": target["destination_vault_id"], "resource": {"type": kind},
              "source_backup_ids": backup_ids[:MAX_CHECKED]}
    link = regions.link_of(ctx, region)
    try:
        ch, signed = regions.open_link(link, header, ctx.now().timestamp(), timeout=CHECK_TIMEOUT)
    except LinkError:
        return set()
    try:
        ch.send(signed)
        answer, _ = ch.recv(timeout=CHECK_TIMEOUT)
    except LinkError:
        return set()
    finally:
        ch.close()
    if answer.get("ok"):
        return set(answer.get("replicated") or [])
    status, code = answer.get("status"), str(answer.get("error") or "BackupService.6950")
    if code == "OpenCBR.RegionLink" or status not in (400, 403, 404, 409):
        return set()
    raise CBRError(f"the destination region {region.name} refused: {answer.get('message')}", code=code,
                   status=status)


def records_of(s: Session, ctx: ServiceContext, backup_ids: list[str]) -> dict[str, list[dict]]:
    """The replication records of backups, in the API's ReplicationRecordGet shape."""
    out: dict[str, list[dict]] = {i: [] for i in backup_ids}
    if not backup_ids:
        return out
    for r in s.scalars(select(ReplicationRecord).where(ReplicationRecord.source_backup_id.in_(backup_ids))
                       .order_by(ReplicationRecord.created_at)):
        out[r.source_backup_id].append(record_wire(ctx, r))
    return out


def record_wire(ctx: ServiceContext, r: ReplicationRecord) -> dict:
    stamp = r.created_at.strftime("%Y-%m-%dT%H:%M:%S.%f")
    return {"id": r.id, "created_at": stamp, "status": r.status, "vault_id": r.vault_id,
            "source_backup_id": r.source_backup_id, "source_checkpoint_id": r.source_checkpoint_id,
            "source_project_id": r.project_id, "source_region": ctx.settings.region,
            "destination_backup_id": r.destination_backup_id,
            "destination_checkpoint_id": r.destination_checkpoint_id,
            "destination_project_id": r.destination_project_id, "destination_region": r.destination_region,
            "destination_vault_id": r.destination_vault_id, "task_id": r.task_id, "wire_bytes": r.wire_bytes,
            "extra_info": {"progress": r.progress, "fail_code": r.fail_code, "fail_reason": r.fail_reason,
                           "auto_trigger": r.auto_trigger, "destination_vault_id": r.destination_vault_id}}


# ------------------------------------------------------------------------------------ the source backup's image
class BackupImageSource:
    """A disk backup of a repository as the engine's ``DiskSource``: reads decode the backup's chunks
    (checked against their digests), zero blocks are holes.

    The engine's reader reads the data extents in order, one segment at a time; the next batch of
    ``BATCH`` blocks is decoded (decrypt, decompress, verify) in ``workers`` threads while the engine
    works on the current one, at most ``AHEAD`` batches ahead (their plaintext is what this holds:
    ``(AHEAD + 1) * BATCH`` blocks). One thread one batch ahead measured best on 2 cores (bench/replicate.py:
    more threads compete with the engine's hashing and encoding and raise the peak RSS past 200 MB)."""

    BATCH, AHEAD = 64, 1

    def __init__(self, cs, backup_id: str, workers: int = 1):
        self.cs = cs
        self.index = FixedIndex.read(cs, backup_id)
        self.size = self.index.disk_size
        self.bs = self.index.block_size
        # where the chunks are: loaded once (a record not found where it says falls back to
        # get_chunk, which looks again); loading it per batch cost more than the decoding, measured
        self._where = cs.reader_index(refresh=True)
        self._tls = threading.local()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="replica-read")
        self._batches: dict[int, Future] = {}

    def _decode(self, k: int) -> dict[bytes, bytes]:
        first, last = k * self.BATCH, min(self.index.block_count, (k + 1) * self.BATCH)
        wanted = {self.index.digest(i) for i in range(first, last)} - {ZERO_DIGEST}
        codec = getattr(self._tls, "codec", None)
        if codec is None:
            codec = self._tls.codec = self.cs.codec.clone()
        got: dict[bytes, bytes] = {}
        for span in spans_of(self._where, wanted, lambda d: got.setdefault(d, self.cs.get_chunk(d, codec))):
            for d, data, err in read_span(self.cs, codec, span):
                if err is not None:
                    raise err
                got[d] = data if isinstance(data, bytes) else bytes(data)
        return got

    def _batch(self, k: int) -> dict[bytes, bytes]:
        """Batch ``k``'s plaintext; batches before it are dropped and the next ``AHEAD`` started."""
        for old in [j for j in self._batches if j < k]:
            self._batches.pop(old).cancel()
        last = -(-self.index.block_count // self.BATCH)
        for j in range(k, min(last, k + self.AHEAD + 1)):
            if j not in self._batches:
                self._batches[j] = self._pool.submit(self._decode, j)
        return self._batches[k].result()

    def read(self, offset: int, length: int) -> bytes:
        """The blocks of ``[offset, offset + length)``."""
        end = min(self.size, offset + length)
        if end <= offset:
            return b""
        first, last = offset // self.bs, (end - 1) // self.bs
        out = bytearray()
        got: dict[bytes, bytes] = {}
        for k in range(first // self.BATCH, last // self.BATCH + 1):
            got.update(self._batch(k))
        for i in range(first, last + 1):
            d, n = self.index.digest(i), self.index.block_length(i)
            block = bytes(n) if d == ZERO_DIGEST else got[d]
            lo = max(offset, i * self.bs) - i * self.bs
            hi = min(end, i * self.bs + n) - i * self.bs
            out += block[lo:hi] if (lo, hi) != (0, n) else block
        return bytes(out)

    def data_extents(self):
        start = None
        for i in range(self.index.block_count):
            zero = self.index.is_zero(i)
            if not zero and start is None:
                start = i
            elif zero and start is not None:
                yield start * self.bs, (i - start) * self.bs
                start = None
        if start is not None:
            yield start * self.bs, self.size - start * self.bs

    def close(self) -> None:
        for f in self._batches.values():
            f.cancel()
        self._pool.shutdown(wait=True)


# ------------------------------------------------------------------------------------ the task (source worker)
def run_replication(ctx: ServiceContext, run: tasks.TaskRun) -> None:
    """Replicate one backup; any failure marks the record failed with the reason (and fails the task)."""
    record_id = run.params["record_id"]
    try:
        _replicate(ctx, run, record_id)
    except (tasks.TaskCancelled, tasks.LeaseLost):
        _fail(ctx, record_id, "BackupService.6950", "the replication was cancelled or its worker was lost")
        raise
    except CBRError as e:
        _fail(ctx, record_id, e.code, e.message)
        raise
    except Exception as e:
        err = tasks.error_of(ctx, e)
        _fail(ctx, record_id, err.code, err.message)
        raise


def _fail(ctx: ServiceContext, record_id: str, code: str, message: str) -> None:
    with ctx.tx() as s:
        rec = s.get(ReplicationRecord, record_id)
        if rec is not None and rec.status == REPLICATING:
            rec.status, rec.fail_code, rec.fail_reason, rec.updated_at = FAILED, code, message[:2000], ctx.now()


def abandon_replication(s: Session, task: Task) -> None:
    """A source's task whose worker was lost: its record fails. A receiver's (destination) whose process
    was lost mid-transfer: the replica it was receiving goes (never a partial replica)."""
    rec = s.get(ReplicationRecord, (task.params or {}).get("record_id", ""))
    if rec is not None and rec.status == REPLICATING:
        rec.status, rec.fail_code, rec.fail_reason = FAILED, "BackupService.6950", "the replication's worker was lost"
    top = s.get(Backup, (task.params or {}).get("replica_id", ""))
    if top is not None and top.status == B.PROTECTING:
        _delete_replica_rows(s, top)


def _delete_replica_rows(s: Session, top: Backup) -> None:
    cp = s.get(Checkpoint, top.checkpoint_id)
    for c in list(s.scalars(select(Backup).where(Backup.parent_id == top.id))):
        s.delete(c)
    s.flush()
    s.delete(top)
    if cp is not None:
        s.delete(cp)


def _replicate(ctx: ServiceContext, run: tasks.TaskRun, record_id: str) -> None:
    with ctx.tx() as s:
        rec = s.get(ReplicationRecord, record_id)
        if rec is None or rec.status != REPLICATING:
            return
        b = s.get(Backup, rec.source_backup_id)
        if b is None or b.status != B.AVAILABLE:
            raise ReplicationFailed("the source backup was deleted (or is no longer Available)")
        vault = s.get(Vault, b.vault_id)
        parts = data_backups(s, b)
        region_row = s.scalar(select(Region).where(Region.name == rec.destination_region))
        if region_row is None:
            raise ReplicationFailed(f"region {rec.destination_region} is no longer linked")
        link = regions.link_of(ctx, region_row)
        header = _request(s, ctx, run, rec, b, parts)
        part_ids = [d.id for d in parts]
        source_id, tree = b.id, b.resource_type == R.FILE_SYSTEM
    src = repository(ctx, vault, create=False)
    progress = TaskProgress(run)
    try:
        ch, signed = regions.open_link(link, header, ctx.now().timestamp(), seal=True)
    except RemoteError as e:  # busy: it serves as many transfers as it may
        raise ReplicationFailed(f"the destination region {link.name} refused: {e.message}") from None
    except LinkError as e:
        raise ReplicationFailed(f"the destination region {link.name} cannot be reached: {e}") from None
    try:
        try:
            answer, _ = ch.request(signed, timeout=60)
        except RemoteError as e:
            raise ReplicationFailed(f"the destination region {link.name} refused: {e.message}") from None
        with ctx.tx() as s:
            rec = s.get(ReplicationRecord, record_id)
            rec.destination_backup_id = answer["backup_id"]
            rec.destination_checkpoint_id = answer["checkpoint_id"]
        final = _send(ch, answer, src, part_ids, tree, progress, link.name, lambda: _source_left(ctx, source_id))
    except LinkError as e:
        raise ReplicationFailed(f"the link to region {link.name} broke: {e}") from None
    except RemoteFailure as e:
        raise ReplicationFailed(f"the destination region {link.name} stopped the transfer: {e}") from None
    except EngineError:
        if progress.cancel.is_set():
            raise ReplicationFailed("the replication was cancelled") from None
        gone = _source_left(ctx, source_id)  # its data went with it: say so, not what the reader met
        if gone:
            raise SourceDeleted(gone) from None
        raise
    except Exception as e:
        if progress.cancel.is_set() and not isinstance(e, CBRError):
            raise ReplicationFailed("the replication was cancelled") from None
        raise
    finally:
        wire = ch.sent_bytes + ch.received_bytes
        ch.close()
    with ctx.tx() as s:
        rec = s.get(ReplicationRecord, record_id)
        rec.status, rec.progress, rec.wire_bytes, rec.updated_at = AVAILABLE, 100, wire, ctx.now()
        info = _op_info(ctx, rec, b, final.get("name", ""))
    run.set_extra(replication=info, wire_bytes=wire)


def _copy_disk(src, chunks, pid: str, dest: str, block_size: int, previous, cancel, progress):
    """A source disk backup into the destination: block for block where the block sizes agree (records
    sealed again without a second compression, unchanged blocks since ``previous`` not read:
    engine/disk/copy.py), else the image backed up again."""
    try:
        return copy_disk_backup(src.chunks, pid, chunks, backup_id=dest, meta={}, block_size=block_size,
                                previous=previous, cancel=cancel, progress=progress)
    except InvalidArgument:
        pass
    image = BackupImageSource(src.chunks, pid)
    try:
        return backup_disk(chunks, image, backup_id=dest, meta={}, block_size=block_size, cancel=cancel,
                           progress=progress)
    finally:
        image.close()


def _source_left(ctx: ServiceContext, backup_id: str) -> str:
    """Why the source backup cannot be replicated any more ("" while it is Available)."""
    with ctx.read() as s:
        b = s.get(Backup, backup_id)
        if b is not None and b.status == B.AVAILABLE:
            return ""
        return (f"the source backup {b.name if b is not None else backup_id} was deleted while it was being "
                "replicated; nothing of it was kept in the destination region")


def _request(s: Session, ctx: ServiceContext, run: tasks.TaskRun, rec: ReplicationRecord, b: Backup,
             parts: list[Backup]) -> dict:
    """What the destination is told: the source backup (and its disks), the tenant's account, the target."""
    account = s.get(Account, s.get(Project, rec.project_id).account_id)
    disks = [{"source_backup_id": d.id, "resource_id": d.resource_id, "name": d.resource_name,
              "size_bytes": d.resource_size_bytes, "disk_role": d.disk_role, "device_index": d.device_index,
              "logical_bytes": d.logical_bytes} for d in parts if d is not b]
    return {"op": "replicate", "source_region": ctx.settings.region, "source_account": account.name,
            "source_project_id": rec.project_id, "source_backup_id": b.id,
            "source_checkpoint_id": b.checkpoint_id, "source_backup_name": b.name,
            "destination_project_id": rec.destination_project_id, "destination_vault_id": rec.destination_vault_id,
            "name": run.params.get("name") or b.name, "description": run.params.get("description") or "",
            "resource": {"id": b.resource_id, "name": b.resource_name, "type": b.resource_type,
                         "size_bytes": b.resource_size_bytes, "az": b.resource_az},
            "logical_bytes": b.logical_bytes, "auto_trigger": rec.auto_trigger,
            "retention_rule": run.params.get("retention_rule") or "",
            "details": {k: v for k, v in (b.details or {}).items() if k in ("disks", "consistency", "partial")},
            "disks": disks if b.resource_type == R.SERVER else []}


def _send(ch, answer: dict, src, part_ids: list[str], tree: bool, progress: TaskProgress, region: str,
          source_left: Callable[[], str]) -> dict:
    """The engine's backup of each source disk image -- or of the source file system's stored tree --
    into the destination's vault, over the channel; then, unless the source backup went meanwhile
    (``source_left``: why, or ""), the destination's confirmation (returned)."""
    access = VaultAccess.of(answer)
    results = []
    parents = answer.get("parents") or [None] * len(part_ids)
    with access.chunks(ch) as chunks:
        for i, (pid, dest, parent) in enumerate(zip(part_ids, answer["disks"], parents, strict=True)):
            span = progress.span(int(99 * i / len(part_ids)), int(99 * (i + 1) / len(part_ids)))

            def both(done: int, total: int, span=span) -> None:  # this task's progress, and the receiver's
                span(done, total)
                chunks.progress(done, total)

            previous = tuple(parent) if isinstance(parent, list) and len(parent) == 2 else None
            if tree:  # (its chunks are cut by the destination's keyed chunker: the tree is backed up again)
                r = engine_tree.backup_tree_from(chunks, engine_tree.StoredTreeSource(src.chunks, pid), backup_id=dest,
                                                 meta={}, parent_backup_id=previous[0] if previous else None,
                                                 cancel=span.cancel, progress=both)
            else:
                r = _copy_disk(src, chunks, pid, dest, access.block_size, previous, span.cancel, both)
            results.append({**r.to_dict(), "warnings": []} if tree else r.to_dict())
    gone = source_left()
    if gone:  # the destination withdraws what it recorded: no replica of a deleted backup
        ch.send(error_answer(SourceDeleted.code, gone))
        raise SourceDeleted(gone)
    ch.send({"ok": True, "result": {"disks": results}})
    try:
        final, _ = ch.recv(timeout=120)
    except LinkError as e:
        raise ReplicationFailed(f"the destination region {region} did not confirm the replica: {e}") from None
    if not final.get("ok"):
        raise ReplicationFailed(f"the destination region {region} did not keep the replica: "
                                f"{final.get('message', final.get('error'))}")
    return final


# ------------------------------------------------------------------------------------ the receiver (destination)
def receive(ctx: ServiceContext, channel, header: dict) -> None:
    """One replication into this installation, from its first message to the replica being published
    (or withdrawn). Answers on ``channel``; errors are answered, never raised past the channel."""
    op = header.get("op")
    try:
        with ctx.tx() as s:
            cred = regions.check_request(s, ctx, header)
            if op == "check":
                checked = _check(s, cred, header)
            elif op == "vaults":
                checked = _replication_vaults(s, cred, header)
            elif op == "replicate":
                made = _accept(s, ctx, cred, header)
            else:
                raise Forbidden("a region link carries replication traffic only", code="OpenCBR.RegionLink")
    except CBRError as e:
        channel.send({**error_answer(e.code, e.message), "status": e.status})
        return
    if op in ("check", "vaults"):
        channel.send(checked)
        return
    replica_id, vault, scopes, task_id, previous = made
    repo = repository(ctx, vault)
    channel.send({"ok": True, "vault": vault_request(repo), "backup_id": replica_id,
                  "checkpoint_id": made_checkpoint(ctx, replica_id), "disks": [sc.name for sc in scopes],
                  "parents": previous})
    final = None
    reason = "the source ended the transfer"
    try:
        # keep_partial: what arrived before a broken link stays (uncommitted) for the next attempt
        final = serve_backup(repo, channel, scopes, progress=lambda d, t: _progress(ctx, task_id, d, t),
                             keep_partial=True)
        if not final.get("ok"):
            reason = f"the source failed: {final.get('message') or final.get('error')}"
            final = None
    except Exception as e:  # noqa: BLE001 - a broken link, a refusal: the replica is withdrawn
        reason = f"{type(e).__name__}: {e}"
        final = None
    if final is None:
        _withdraw(ctx, replica_id, task_id, reason)
        return
    name = _publish_replica(ctx, repo, replica_id, task_id, final.get("result") or {})
    channel.send({"ok": True, "backup_id": replica_id, "name": name})
    # (guide 5.3: the replication policy's retention applies to the replicas here; 13.5.2: after each one)
    retention.apply_retention_after_backup(ctx, vault.id, str((header.get("resource") or {}).get("id", ""))[:36])


def made_checkpoint(ctx: ServiceContext, replica_id: str) -> str:
    with ctx.read() as s:
        return s.get(Backup, replica_id).checkpoint_id


def _target_vault(s: Session, cred, h: dict) -> tuple[Project, Vault]:
    """Guide 3.6/4.4 in the destination: a replication vault of the right kind with room, in a project of
    the source tenant's account."""
    project = s.get(Project, str(h.get("destination_project_id", ""))[:36])
    account = s.get(Account, project.account_id) if project is not None else None
    if account is None or account.name != regions.mapped_account(cred, str(h.get("source_account", ""))):
        raise Forbidden("the destination project is not a project of the source tenant's account in this region",
                        code="BackupService.6959")
    vault = s.get(Vault, str(h.get("destination_vault_id", ""))[:36])
    if vault is None or vault.project_id != project.id:
        raise NotFound("the destination vault is not in the destination project", code="BackupService.6101")
    if vault.protect_type != "replication":
        raise InvalidParameter(f"vault {vault.name} is not a replication vault", code="BackupService.6960")
    res = h.get("resource") or {}
    kind = {t: k for k, t in _KIND_OF_VAULT.items()}.get(res.get("type"), "")
    if vault.object_type != kind:
        raise InvalidParameter(f"vault {vault.name} holds {vault.object_type} backups, not {kind or 'these'}",
                               code="BackupService.6961")
    if vault.status != "available":
        raise StateConflict(f"vault {vault.name} is {vault.status}", code="BackupService.6211")
    B.check_capacity_allows_backup(memberships.counted_bytes(vault), vault.size_gb)  # (as a backup: guide 13.3.4)
    return project, vault


def _replicas_of(s: Session, source_region: str, source_ids: list[str]) -> dict[str, str]:
    """{source backup id: its replica here} (guide 3.6: one replica per backup per region)."""
    return dict(s.execute(select(Backup.source_backup_id, Backup.id).where(
        Backup.source_backup_id.in_(source_ids), Backup.source_region == source_region,
        Backup.status != B.ERROR, Backup.parent_id.is_(None))).all())


def _check(s: Session, cred, h: dict) -> dict:
    """The ``check`` request: the source's API asks before it queues anything (the refusals up front)."""
    _target_vault(s, cred, h)
    ids = [str(i)[:36] for i in (h.get("source_backup_ids") or [])[:MAX_CHECKED]]
    return {"ok": True, "replicated": sorted(_replicas_of(s, str(h.get("source_region")), ids))}


#: Vaults one ``vaults`` answer lists at most (list_external_vault pages over them at the source).
MAX_EXTERNAL_VAULTS = 1000


def _replication_vaults(s: Session, cred, h: dict) -> dict:
    """The ``vaults`` request (list_external_vault at the source): the replication vaults of the projects of
    the source tenant's account here, the only vaults it may replicate into; ``project_id`` narrows them
    to one of those projects. Nothing of other accounts is ever listed."""
    account = s.scalar(select(Account).where(Account.name == regions.mapped_account(
        cred, str(h.get("source_account", "")))))
    if account is None:
        return {"ok": True, "vaults": []}
    q = (select(Vault, Project).join(Project, Project.id == Vault.project_id)
         .where(Project.account_id == account.id, Vault.protect_type == "replication")
         .order_by(Vault.created_at, Vault.id).limit(MAX_EXTERNAL_VAULTS))
    if h.get("project_id"):
        q = q.where(Project.id == str(h["project_id"])[:36])
    return {"ok": True, "vaults": [
        {"id": v.id, "name": v.name, "project_id": v.project_id, "region": v.region, "object_type": v.object_type,
         "protect_type": v.protect_type, "size_gb": v.size_gb, "used_bytes": memberships.counted_bytes(v),
         "status": v.status, "consistent_level": v.consistent_level, "created_at": v.created_at.isoformat()}
        for v, _project in s.execute(q)]}


def external_vaults(s: Session, ctx: ServiceContext, p: Principal, region_id: object,
                    project_id: str | None = None) -> list[dict]:
    """list_external_vault: the vaults of linked region ``region_id`` this project could replicate into
    (replication vaults of its account's projects there), as that region answers them. A region this
    installation is not linked to has none; one that cannot be reached now is a 503 saying so."""
    if not isinstance(region_id, str) or not region_id:
        raise InvalidParameter("region_id is required")
    row = s.scalar(select(Region).where(Region.name == region_id))
    if row is None:
        return []
    account = s.get(Account, s.get(Project, p.project_id).account_id)
    header = {"op": "vaults", "source_region": ctx.settings.region, "source_account": account.name,
              "project_id": project_id or ""}
    try:
        ch, signed = regions.open_link(regions.link_of(ctx, row), header, ctx.now().timestamp(),
                                       timeout=CHECK_TIMEOUT)
        try:
            ch.send(signed)
            answer, _ = ch.recv(timeout=CHECK_TIMEOUT)
        finally:
            ch.close()
    except LinkError as e:
        raise CBRError(f"region {row.name} cannot be reached now: {e}", code="BackupService.6963",
                       status=503) from None
    if not answer.get("ok"):
        raise CBRError(f"region {row.name} refused to list its vaults: {answer.get('message')}",
                       code="BackupService.6963", status=503)
    return list(answer.get("vaults") or [])


def _accept(s: Session, ctx: ServiceContext, cred, h: dict,
            ) -> tuple[str, Vault, list[BackupScope], str, list[tuple[str, str] | None]]:
    project, vault = _target_vault(s, cred, h)
    quotas.check_room(s, ctx.settings, project.id, quotas.BACKUP)  # a replica is a backup of its project
    res = h.get("resource") or {}
    source_id, source_region = str(h.get("source_backup_id")), str(h.get("source_region"))
    there = _replicas_of(s, source_region, [source_id]).get(source_id)
    if there:
        raise StateConflict(f"backup {source_id} has a replica in this region already ({there}); delete it "
                            f"before replicating again", code="BackupService.6962")
    now = ctx.now()
    carried = _carried_retention(h)
    rule = carried.rule if carried else None
    cp = Checkpoint(project_id=project.id, vault_id=vault.id, status="protecting", name=str(h.get("name", ""))[:80],
                    auto_trigger=bool(h.get("auto_trigger")), created_at=now, updated_at=now)
    s.add(cp)
    s.flush()
    src_info = {k: h.get(k) for k in ("source_region", "source_project_id", "source_backup_id",
                                      "source_checkpoint_id", "source_backup_name")}
    common = dict(project_id=project.id, vault_id=vault.id, checkpoint_id=cp.id, image_type="replication",
                  status=B.PROTECTING, auto_trigger=bool(h.get("auto_trigger")), encrypted=vault.encrypted,
                  source_region=source_region, created_at=now, updated_at=now,
                  description=str(h.get("description", ""))[:255])
    top = Backup(name=str(h.get("name", ""))[:80], resource_id=str(res.get("id", ""))[:36],
                 resource_name=str(res.get("name", ""))[:255], resource_type=res.get("type"),
                 resource_size_bytes=int(res.get("size_bytes", 0)), resource_az=str(res.get("az", ""))[:64],
                 source_backup_id=source_id, details={**(h.get("details") or {}), "replication": src_info},
                 retention_rule=carried.encode() if carried else "",
                 expired_at=_naive(rule.expires_at(now.replace(tzinfo=UTC))) if rule else None, **common)
    s.add(top)
    s.flush()
    parts = [top]
    if res.get("type") == R.SERVER:
        parts = []
        for d in h.get("disks") or []:
            child = Backup(parent_id=top.id, name=f"{top.name}-{d.get('disk_role')}-{d.get('device_index')}",
                           resource_id=str(d.get("resource_id", ""))[:36], resource_name=str(d.get("name", ""))[:255],
                           resource_type=R.DISK, resource_size_bytes=int(d.get("size_bytes", 0)),
                           disk_role=d.get("disk_role"), device_index=d.get("device_index"),
                           source_backup_id=str(d.get("source_backup_id", ""))[:36], **common)
            s.add(child)
            parts.append(child)
        s.flush()
        if not parts:
            raise InvalidParameter("a server backup without disks cannot be replicated")
    task = Task(project_id=project.id, operation_type="replication", status=tasks.RUNNING, vault_id=vault.id,
                vault_name=vault.name, resource_id=top.resource_id, resource_name=top.resource_name,
                resource_type=top.resource_type, checkpoint_id=cp.id, created_at=now, updated_at=now,
                started_at=now, run_after=now, lease_owner=RECEIVER_OWNER,
                lease_expires_at=now + timedelta(seconds=ctx.settings.task_lease_seconds), attempts=1,
                max_attempts=1,
                params={"replica_id": top.id},
                extra_info={"replication": {**src_info, "destination_backup_id": top.id,
                                            "destination_checkpoint_id": cp.id,
                                            "destination_project_id": project.id,
                                            "destination_region": ctx.settings.region,
                                            "destination_backup_name": top.name},
                            "common": {"progress": 0}})
    s.add(task)
    s.flush()
    top.task_id = task.id
    # each part's previous replica (of the same disk or file system), which the new one is made over
    previous = [_previous_replica(s, p) for p in parts]
    kind = "tree" if top.resource_type == R.FILE_SYSTEM else "disk"
    scopes = [BackupScope(name=p.id, kind=kind, readable=(prev[0],) if prev else (),
                          meta=_replica_meta(p, vault, top, src_info)) for p, prev in zip(parts, previous, strict=True)]
    s.expunge(vault)
    return top.id, vault, scopes, task.id, previous


def _previous_replica(s: Session, part: Backup) -> tuple[str, str] | None:
    """The newest Available replica of the same disk or file system from the same region in this vault,
    and the source backup it was made from: the new replica is made over it (a file whose recorded
    metadata, a block whose source digest, did not change is not read again)."""
    row = s.execute(select(Backup.id, Backup.source_backup_id).where(
        Backup.vault_id == part.vault_id, Backup.resource_id == part.resource_id,
        Backup.source_region == part.source_region, Backup.resource_type == part.resource_type,
        Backup.image_type == "replication", Backup.status == B.AVAILABLE, Backup.id != part.id)
        .order_by(Backup.created_at.desc()).limit(1)).first()
    return (row[0], row[1]) if row is not None and row[1] else None


def _carried_retention(h: dict) -> CurrentRetention | None:
    """The replication policy's retention an automatic replica carries (guide 5.3); None for a manual
    replica ("manual backup replicas need to be deleted manually") or an unreadable rule."""
    if not h.get("auto_trigger") or not isinstance(h.get("retention_rule"), str) or not h["retention_rule"]:
        return None
    try:
        return CurrentRetention.decode(h["retention_rule"][:64])
    except ValueError:
        return None


def _naive(when):
    return when.replace(tzinfo=None) if when is not None else None


def _replica_meta(b: Backup, vault: Vault, top: Backup, src: dict) -> dict:
    meta = {"backup_id": b.id, "name": b.name, "project_id": b.project_id, "vault_id": vault.id,
            "vault_name": vault.name, "checkpoint_id": b.checkpoint_id, "resource_id": b.resource_id,
            "resource_name": b.resource_name, "resource_type": b.resource_type,
            "resource_size_bytes": b.resource_size_bytes, "image_type": "replication", "replication": src,
            "created_at": b.created_at.isoformat(), "encrypted": vault.encrypted}
    if b is not top:
        meta.update(server={"backup_id": top.id, "name": top.name, "resource_id": top.resource_id,
                            "resource_name": top.resource_name, "layout": (top.details or {}).get("disks", [])},
                    disk_role=b.disk_role, device_index=b.device_index)
    return meta


def _progress(ctx: ServiceContext, task_id: str, done: int, total: int) -> None:
    pct = int(99 * done / total) if total else 0
    with ctx.tx() as s:
        t = s.get(Task, task_id)
        if t is not None and t.status == tasks.RUNNING:  # (the lease is renewed by the source's progress)
            t.progress, t.updated_at = pct, ctx.now()
            t.lease_expires_at = ctx.now() + timedelta(seconds=ctx.settings.task_lease_seconds)
            t.extra_info = {**(t.extra_info or {}), "common": {"progress": pct}}


def _withdraw(ctx: ServiceContext, replica_id: str, task_id: str, reason: str) -> None:
    """No partial replica: the rows go (the engine withdrew what was recorded), the task says why."""
    now = ctx.now()
    with ctx.tx() as s:
        top = s.get(Backup, replica_id)
        if top is not None:
            _delete_replica_rows(s, top)
        t = s.get(Task, task_id)
        if t is not None:
            t.status, t.ended_at, t.updated_at = tasks.FAILED, now, now
            t.error_code, t.error_message, t.lease_owner = "BackupService.6950", reason[:2000], ""
    log.warning("replica %s withdrawn: %s", replica_id, reason)


def _publish_replica(ctx: ServiceContext, repo, replica_id: str, task_id: str, result: dict) -> str:
    stats = {d.get("backup_id"): d for d in result.get("disks") or [] if isinstance(d, dict)}
    used = repo.usage()
    now = ctx.now()
    with ctx.tx() as s:
        top = s.get(Backup, replica_id)
        parts = list(s.scalars(select(Backup).where(Backup.parent_id == top.id))) or [top]
        for p in parts:
            st = stats.get(p.id, {})  # (a disk's BackupResult, a file system's TreeBackupResult)
            p.logical_bytes = int(st.get("disk_size", st.get("total_bytes", p.resource_size_bytes)) or 0)
            p.added_bytes = int(st.get("added_bytes", 0) or 0)
            p.status, p.protected_at, p.updated_at = B.AVAILABLE, now, now
        if parts[0] is not top:
            top.logical_bytes = sum(p.logical_bytes for p in parts)
            top.added_bytes = sum(p.added_bytes for p in parts)
            top.status, top.protected_at, top.updated_at = B.AVAILABLE, now, now
        cp = s.get(Checkpoint, top.checkpoint_id)
        if cp is not None:
            cp.status, cp.updated_at = "available", now
        v = s.get(Vault, top.vault_id)
        if v is not None:
            v.used_bytes = used
        t = s.get(Task, task_id)
        if t is not None:
            t.status, t.progress, t.ended_at, t.updated_at, t.lease_owner = tasks.SUCCESS, 100, now, now, ""
            t.extra_info = {**(t.extra_info or {}), "common": {"progress": 100}}
        return top.name


def with_records(resp: dict, records: dict[str, list[dict]], b: Backup | None = None) -> dict:
    """A BackupResp with its replication records; a replica also says where it came from (extension
    ``replication_source``: source region, project, backup, checkpoint and name)."""
    resp["replication_records"] = records.get(resp["id"], [])
    source = replica_source(b) if b is not None else None
    if source:
        resp["replication_source"] = source
    return resp


def replica_source(b: Backup) -> dict | None:
    """Where a replica came from (source region, project, backup, checkpoint), None for other backups."""
    return (b.details or {}).get("replication") if b.image_type == "replication" else None
