"""Writing into a vault as an agent whose records nobody checked (engine/chunks/unverified.py), for the
tests of unverified packs. The vault is encrypted, as agents' vaults are: the agent held the key, so a
record it sealed under a chunk's name may hold other data (``forged``)."""

from __future__ import annotations

import os

from opencbr.engine import Repository
from opencbr.engine.chunks.session import WriteSession

HEADER = {"type": "disk", "disk_size": 65536, "block_size": 65536}


def new_vault(store):
    return Repository.create(store, "v/", b"k" * 32, encrypted=True)


def write(repo, writer, name, records, *, full=False) -> list[bytes]:
    """One backup of ``records`` ({digest: record}) by ``writer`` (None: the service's own, checked);
    returns the digests it stored (those it did not deduplicate)."""
    s = WriteSession(repo.chunks, writer=writer, force_new=full)
    stored = []
    for d, rec in records.items():
        if s.claim(d):
            s.put_record(d, (rec,))
            stored.append(d)
    s.commit(name, HEADER, refs=b"".join(records))
    return stored


def forged(codec, d: bytes) -> bytes:
    """A record sealed under ``d``'s name holding other data: AES-GCM accepts it, its hash does not."""
    return codec.encode(d, b"not the chunk " * 50)


def random_chunk(repo, size: int = 5000) -> tuple[bytes, bytes]:
    data = os.urandom(size)
    return data, repo.chunks.codec.digest(data)
