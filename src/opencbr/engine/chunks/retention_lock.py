"""The vault lock as the repository keeps it (docs/vault-lock.md): one object ``retention-lock``,
its JSON sealed like a manifest (AES-GCM with the repository's keys when encrypted, with its own
associated data), so that the store alone says which backups may not be deleted: the repository
refuses to delete them whatever the catalog says, and a catalog rebuild restores the lock from it.
"""

from __future__ import annotations

import json

from ..errors import Damaged

LOCK_OBJECT = "retention-lock"
_PURPOSE = b"opencbr-retention-lock"


def put(cs, record: dict) -> None:
    cs.store.put(cs.k(LOCK_OBJECT), cs.sealer.seal(json.dumps(record, sort_keys=True).encode(), _PURPOSE))


def get(cs) -> dict | None:
    """The lock record, or None when the vault was never locked (or the lock was lifted)."""
    try:
        blob = cs.store.get(cs.k(LOCK_OBJECT))
    except KeyError:
        return None
    try:
        return json.loads(cs.sealer.unseal(blob, _PURPOSE, "the vault's retention lock"))
    except ValueError as e:
        raise Damaged(f"the vault's retention lock is unreadable: {e}") from None


def remove(cs) -> None:
    cs.store.delete(cs.k(LOCK_OBJECT))
