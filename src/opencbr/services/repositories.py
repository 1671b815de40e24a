"""The engine repository of each vault (``vaults/<vault_id>/`` in the object store), opened or created
for the tasks that read and write backup data."""

from __future__ import annotations

import os
import threading

from sqlalchemy import select

from opencbr.catalog.models import Vault
from opencbr.engine import Conflict, InvalidArgument, LockTiming, Missing, Repository
from opencbr.services.context import ServiceContext

_repo_lock = threading.Lock()


def lock_timing(ctx: ServiceContext) -> LockTiming:
    """Repository locks follow the task lease: a writer that stopped refreshing its lock for 4 leases
    (2 minutes by default) is dead, whatever its pid says (pids repeat across PID namespaces)."""
    stale = max(20.0, 4.0 * ctx.settings.task_lease_seconds)
    return LockTiming(refresh_interval=stale / 8, stale_after=stale)


def repository(ctx: ServiceContext, vault: Vault, *, create: bool = True) -> Repository:
    """The engine repository of a vault, created on first use (encrypted unless the vault is not). Its
    vault lock checks use the services' clock (docs/vault-lock.md)."""
    repo = _open_or_create(ctx, vault, create)
    repo.clock = ctx.now
    # the data plane's memory bound and where what exceeds it goes (config.py: dedup_memory_entries)
    repo.chunks.memory_entries = max(1, ctx.settings.dedup_memory_entries)
    repo.chunks.spill_dir = _scratch_dir(ctx)
    return repo


def _scratch_dir(ctx: ServiceContext) -> str:
    path = ctx.settings.effective_scratch_dir
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _open_or_create(ctx: ServiceContext, vault: Vault, create: bool) -> Repository:
    prefix = f"vaults/{vault.id}/"
    store = ctx.store
    timing = lock_timing(ctx)
    try:
        return Repository.open(store, prefix, ctx.master_key, lock_timing=timing)
    except Missing:
        if not create:
            raise
    with _repo_lock:
        try:
            return Repository.create(store, prefix, ctx.master_key, encrypted=vault.encrypted, lock_timing=timing)
        except Conflict:  # another worker created it meanwhile
            return Repository.open(store, prefix, ctx.master_key, lock_timing=timing)


def master_key_opens_vaults(ctx: ServiceContext, sample: int = 5) -> bool:
    """Whether the context's master key opens the repositories of (a few of) the encrypted vaults; True
    when none exists yet. For the start-up check of the master key (``server/process.py``)."""
    with ctx.read() as s:
        vault_ids = list(s.scalars(select(Vault.id).where(Vault.encrypted.is_(True)).limit(sample)))
    for vault_id in vault_ids:
        try:
            Repository.open(ctx.store, f"vaults/{vault_id}/", ctx.master_key)
            return True
        except Missing:  # no backup yet: its repository does not exist
            continue
        except InvalidArgument:
            return False
    return True
