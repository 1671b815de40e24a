"""Keys, chunk naming, and the two sealing formats of the repository.

- A repository has two 32-byte secrets, generated at creation: the *data key* (AES-256-GCM for chunk
  records, pack trailers, index and manifest objects) and the *id key* (keyed BLAKE3 for chunk names,
  so a chunk's name reveals nothing about its plaintext). Both are wrapped with the caller's 32-byte
  master key (AES-256-GCM, the repository id as associated data) and stored in the config object, so
  the store is self-describing and the master key can be rotated by rewrapping.
- Unencrypted repositories name chunks by plain BLAKE3 and protect metadata objects with a BLAKE3
  checksum instead of a GCM tag, so corruption is detected either way.
- Secrets for other purposes (the content-defined chunker's gear and cut tables, see
  ``tree/chunker.py``) are *derived* from the data key by HKDF-SHA256 with a label per purpose
  (:meth:`RepoKeys.derive`, stretched with keyed BLAKE3): nothing new to store or wrap, and each is
  independent of the key and of the others (a leaked gear table tells nothing about the data key).

Nonces are 96 random bits per message. With a per-repository data key this stays far below the
2^32-messages bound for random GCM nonces (2^32 chunks of 64 KiB = 256 TiB of unique data per vault).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import Damaged, InvalidArgument

DIGEST_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
ZERO_DIGEST = bytes(DIGEST_SIZE)  # marker for an all-zero block; never the digest of real data
_CHECKSUM_SIZE = 16


@dataclass(frozen=True)
class RepoKeys:
    """The per-repository secrets (None for an unencrypted repository)."""

    data_key: bytes
    id_key: bytes

    @classmethod
    def generate(cls) -> "RepoKeys":
        return cls(os.urandom(32), os.urandom(32))

    def wrap(self, master_key: bytes, repo_id: str) -> dict:
        _check_master(master_key)
        nonce = os.urandom(NONCE_SIZE)
        ct = AESGCM(master_key).encrypt(nonce, self.data_key + self.id_key, _wrap_aad(repo_id))
        return {"wrap": "aes-256-gcm", "nonce": nonce.hex(), "ciphertext": ct.hex()}

    def derive(self, label: bytes, length: int) -> bytes:
        """``length`` bytes of key material for one purpose: a 32-byte subkey by HKDF-SHA256 of the
        data key with ``label`` as the domain separation (``info``), stretched to ``length`` by the
        keyed BLAKE3 output stream (HKDF alone stops at 8160 bytes)."""
        sub = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=label).derive(self.data_key)
        return blake3.blake3(key=sub).digest(length)

    @classmethod
    def unwrap(cls, wrapped: dict, master_key: bytes, repo_id: str) -> "RepoKeys":
        _check_master(master_key)
        try:
            raw = AESGCM(master_key).decrypt(bytes.fromhex(wrapped["nonce"]), bytes.fromhex(wrapped["ciphertext"]),
                                             _wrap_aad(repo_id))
        except InvalidTag:
            raise InvalidArgument("the master key does not open this repository") from None
        return cls(raw[:32], raw[32:64])


def _wrap_aad(repo_id: str) -> bytes:
    return b"opencbr-repo-keys:" + repo_id.encode()


def _check_master(master_key: bytes) -> None:
    if not isinstance(master_key, (bytes, bytearray)) or len(master_key) != 32:
        raise InvalidArgument("the master key must be 32 bytes")


class Sealer:
    """Seals metadata blobs (pack trailers, index objects, manifests, condemned lists).

    Encrypted: ``nonce | AES-GCM(payload)`` with ``purpose`` as associated data (a manifest cannot be
    passed off as an index). Unencrypted: ``payload | blake3(purpose|payload)[:16]``.
    """

    def __init__(self, keys: RepoKeys | None):
        self._aes = AESGCM(keys.data_key) if keys else None

    @property
    def encrypted(self) -> bool:
        return self._aes is not None

    def seal(self, payload: bytes, purpose: bytes) -> bytes:
        if self._aes is not None:
            nonce = os.urandom(NONCE_SIZE)
            return nonce + self._aes.encrypt(nonce, payload, purpose)
        return payload + blake3.blake3(purpose + payload).digest(_CHECKSUM_SIZE)

    @property
    def seal_head(self) -> int:
        """Bytes a sealed blob has before its payload (the nonce when encrypted)."""
        return NONCE_SIZE if self._aes is not None else 0

    def seal_in_place(self, buf: bytearray, n: int, purpose: bytes) -> memoryview:
        """:meth:`seal` (same bytes) of the ``n`` payload bytes at ``buf[seal_head:]``, in ``buf``
        itself, which has 16 bytes of room after them: for blobs as large as a big disk's manifest,
        which ``nonce + ciphertext`` would copy twice. Returns the sealed blob (a view of ``buf``)."""
        mv = memoryview(buf)
        head = self.seal_head
        if self._aes is not None:
            nonce = os.urandom(NONCE_SIZE)
            mv[:NONCE_SIZE] = nonce
            self._aes.encrypt_into(nonce, mv[head:head + n], purpose, mv[head:head + n + TAG_SIZE])  # (in place)
            return mv[:head + n + TAG_SIZE]
        check = blake3.blake3(purpose)
        check.update(mv[:n])
        mv[n:n + _CHECKSUM_SIZE] = check.digest(_CHECKSUM_SIZE)
        return mv[:n + _CHECKSUM_SIZE]

    def unseal(self, blob: bytes, purpose: bytes, what: str) -> bytes:
        if self._aes is not None:
            if len(blob) < NONCE_SIZE + TAG_SIZE:
                raise Damaged(f"{what}: truncated")
            try:
                return self._aes.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], purpose)
            except InvalidTag:
                raise Damaged(f"{what}: authentication failed") from None
        if len(blob) < _CHECKSUM_SIZE:
            raise Damaged(f"{what}: truncated")
        payload, check = blob[:-_CHECKSUM_SIZE], blob[-_CHECKSUM_SIZE:]
        if blake3.blake3(purpose + payload).digest(_CHECKSUM_SIZE) != check:
            raise Damaged(f"{what}: checksum mismatch")
        return payload
