"""A backup's attachments: small objects that belong to one backup but are known only after its manifest
was written (an application-consistent backup's restore material, which exists only after post-thaw).

Each is one object ``attachments/<backup id>/<name>``, zstd-compressed and sealed like a manifest (AES-GCM
with the repository's keys when encrypted, with the backup and name as associated data, so one backup's
attachment cannot be passed off as another's). They count in the repository's usage, go with their backup
(``delete_backup``) and are found from the backup id alone (a catalog rebuild reads them from the store).
"""

from __future__ import annotations

import re

import zstandard

from ..errors import Damaged, InvalidArgument, Missing
from .manifests import check_name

ATTACHMENTS_DIR = "attachments/"
#: Larger ones are refused: an attachment is read whole into memory (restore material is 64 MiB at most).
MAX_ATTACHMENT_BYTES = 96 << 20
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def _key(cs, backup_id: str, name: str) -> str:
    check_name(backup_id)
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidArgument(f"invalid attachment name {name!r}")
    return cs.k(f"{ATTACHMENTS_DIR}{backup_id}/{name}")


def _purpose(backup_id: str, name: str) -> bytes:
    return f"opencbr-attachment:{backup_id}/{name}".encode()


def put(cs, backup_id: str, name: str, data: bytes) -> int:
    """Store (or replace) the attachment; returns its stored size."""
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise InvalidArgument(f"an attachment holds at most {MAX_ATTACHMENT_BYTES} bytes")
    blob = cs.sealer.seal(zstandard.ZstdCompressor(level=3).compress(data), _purpose(backup_id, name))
    cs.store.put(_key(cs, backup_id, name), blob)
    return len(blob)


def get(cs, backup_id: str, name: str) -> bytes:
    key = _key(cs, backup_id, name)
    try:
        blob = cs.store.get(key)
    except KeyError:
        raise Missing(f"backup {backup_id} has no attachment {name!r}") from None
    raw = cs.sealer.unseal(blob, _purpose(backup_id, name), f"attachment {backup_id}/{name}")
    try:
        return zstandard.ZstdDecompressor().decompress(raw, max_output_size=MAX_ATTACHMENT_BYTES)
    except zstandard.ZstdError as e:
        raise Damaged(f"attachment {backup_id}/{name}: {e}") from None


def names(cs, backup_id: str) -> list[str]:
    prefix = cs.k(f"{ATTACHMENTS_DIR}{check_name(backup_id)}/")
    return sorted(key[len(prefix):] for key, _ in cs.store.list(prefix))


def delete_all(cs, backup_id: str) -> None:
    for name in names(cs, backup_id):
        cs.store.delete(_key(cs, backup_id, name))


def stored_bytes(cs) -> int:
    """Bytes of every attachment in the repository."""
    return sum(size for _, size in cs.store.list(cs.k(ATTACHMENTS_DIR)))
