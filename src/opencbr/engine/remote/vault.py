"""What a task request brings of its vault: the keys (for the task only: never written here) and the
chunking parameters, and the remote chunk store made of them over the task's channel."""

from __future__ import annotations

import base64
from dataclasses import dataclass

from ..chunks.crypto import RepoKeys
from .client import RemoteChunks

TASK_TIMEOUT = 120.0  # seconds the vault may stay silent before the task fails
PROTOCOL = 2  # of the chunk messages this side serves (remote/__init__.py); a request without it: 1


class BadRequest(ValueError):
    """A task request that lacks or garbles a parameter."""


@dataclass(frozen=True)
class VaultAccess:
    keys: RepoKeys | None
    block_size: int
    max_chunk: int
    pack_size: int
    protocol: int = 1

    @classmethod
    def of(cls, request: dict) -> "VaultAccess":
        v = request.get("vault")
        if not isinstance(v, dict):
            raise BadRequest("the request names no vault")
        keys = None
        raw = v.get("keys")
        if raw:
            keys = RepoKeys(base64.b64decode(raw["data_key"]), base64.b64decode(raw["id_key"]))
        return cls(keys, int(v["block_size"]), int(v["max_chunk"]), int(v.get("pack_size", 8 << 20)),
                   min(PROTOCOL, int(v.get("protocol", 1))))

    def chunks(self, channel) -> RemoteChunks:
        # (no pack_size: the packs are made by the vault's side; the agent's heap need not hold one)
        return RemoteChunks(channel, self.keys, max_chunk=self.max_chunk, timeout=TASK_TIMEOUT,
                            protocol=self.protocol)


def vault_request(repo) -> dict:
    """The ``vault`` part of a task request, from the worker's :class:`~opencbr.engine.Repository`."""
    keys = repo.chunks.keys
    return {
        "id": repo.id, "block_size": repo.block_size, "pack_size": repo.chunks.pack_size, "protocol": PROTOCOL,
        "max_chunk": repo.chunks.codec.max_chunk, "encrypted": keys is not None,
        "keys": None if keys is None else {"data_key": base64.b64encode(keys.data_key).decode(),
                                           "id_key": base64.b64encode(keys.id_key).decode()},
    }
