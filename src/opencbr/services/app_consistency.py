"""Where an application-consistent backup's restore material lives (docs/app-consistent.md).

The agent's record of a quiesced backup (``achieved``, ``reason``, each hook's outcome) holds, for
PostgreSQL, the backup label and the WAL a restored data directory replays (up to 64 MiB). When the
agent read the data live (a disk without snapshot, a directory tree) that record exists only after
post-thaw, so after the backup's manifest was written: it is kept as an *attachment* of the backup in
the vault (``attachments/<backup id>/app-consistency``), encrypted like the rest, counted in the vault's
used capacity, removed with the backup, and found by a catalog rebuild from the backup id alone. The
catalog row keeps only a reference: ``details.app_consistency = {"attachment": ..., "stored_bytes": ...}``.

With LVM snapshots the record is in the manifest's meta already (the agent reads it there at restore).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencbr.catalog.models import Agent, Backup, Resource, Vault, VaultResource
from opencbr.domain import resource as R
from opencbr.engine import Missing, Repository

ATTACHMENT = "app-consistency"
#: details a restore needs but which no answer shows (PostgreSQL's WAL)
_BULKY = ("wal",)


def keep(repo: Repository, backup_id: str, record: dict) -> dict:
    """Store the full record with the backup; the reference its catalog row keeps."""
    stored = repo.put_attachment(backup_id, ATTACHMENT, json.dumps(record, separators=(",", ":")).encode())
    return {"attachment": ATTACHMENT, "stored_bytes": stored}


def material(repo: Repository, backup_id: str, details: dict | None) -> dict | None:
    """The full record a restore hands to the agent, from the backup row's ``details`` (its reference,
    or the record itself in rows written before attachments existed); None if the backup has none."""
    kept = (details or {}).get("app_consistency")
    if not isinstance(kept, dict):
        return None
    if "attachment" not in kept:
        return kept  # an older row: the record inline
    return json.loads(repo.get_attachment(backup_id, kept["attachment"]))


def rebuilt(repo: Repository, backup_id: str) -> dict:
    """What a catalog rebuild adds to a backup row's details from its attachment: the reference, and
    the consistency achieved (``app``, without the bulky material); nothing if it has none."""
    if ATTACHMENT not in repo.attachment_names(backup_id):
        return {}
    try:
        raw = repo.get_attachment(backup_id, ATTACHMENT)
    except Missing:
        return {}
    return {"app_consistency": {"attachment": ATTACHMENT}, "app": summary(json.loads(raw))}


def summary(record: dict) -> dict:
    """The record without the restore material (what ``consistency.app`` holds)."""
    hooks = [{**h, "details": {k: v for k, v in (h.get("details") or {}).items() if k not in _BULKY}}
             for h in record.get("hooks") or [] if isinstance(h, dict)]
    return {**record, "hooks": hooks}


def restore_args(s: Session, backup: Backup | None, kind: str) -> dict | None:
    """What an agent needs to ready the databases of a restored backup, if it was app-consistent:
    ``source_path`` (the backed-up directory; for a disk, where it was mounted: its inventory's
    mount point) and the row's ``details`` (read the material with :func:`with_material`, outside the
    transaction). None when there is nothing to ready."""
    details = (backup.details or {}) if backup is not None else {}
    app = (details.get("consistency") or {}).get("app") if isinstance(details.get("consistency"), dict) else None
    if not details.get("app_consistency") and not (app and app.get("achieved") == "app_consistent"):
        return None
    source = s.get(Resource, backup.resource_id)
    if source is None:
        return None
    path = source.path if kind == "tree" else (source.identity or {}).get("mountpoint")
    return {"source_path": path or None, "details": dict(details)} if path else None


def with_material(repo: Repository, backup_id: str, args: dict | None) -> dict:
    """The restore request's ``app_consistency`` and ``source_path`` (without a record the agent looks
    in the manifest's meta, where a snapshot's record is)."""
    if not args:
        return {}
    return {"source_path": args["source_path"], "app_consistency": material(repo, backup_id, args["details"])}


# ------------------------------------------------------------------------ check_agent for server resources
_MAX_HOOKS = 32


def _text(value: object, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def readiness(answer: object) -> dict:
    """A bounded copy of the agent's readiness answer (an agent is not trusted with our memory): what the
    heartbeat keeps with the agent's inventory."""
    if not isinstance(answer, dict):
        return {"state": "unsupported", "hooks": []}
    hooks = [{"name": _text(h.get("name"), 300), "kind": _text(h.get("kind"), 16), "ok": h.get("ok") is True,
              "message": _text(h.get("message"), 1000)}
             for h in (answer.get("hooks") if isinstance(answer.get("hooks"), list) else [])[:_MAX_HOOKS]
             if isinstance(h, dict)]
    out = {"state": _text(answer.get("state"), 16) or "unsupported", "hooks": hooks}
    for key, limit in (("checked_at", 40), ("error", 1000)):
        if _text(answer.get(key), limit):
            out[key] = _text(answer.get(key), limit)
    return out


# ------------------------------------------------------------------------------------ readiness polls
#: How long the heartbeat keeps asking an agent about its applications after a check_agent on its host.
READINESS_WANTED_SECONDS = 15 * 60
_WANTED_AT = "readiness_wanted_at"


def readiness_wanted(s: Session, now: datetime, agents: list[Agent]) -> set[str]:
    """The agents whose heartbeat asks whether their applications can be quiesced (each ask connects to
    every database the agent finds): those whose host is in an app_consistent vault, and those whose
    host check_agent asked about in the last :data:`READINESS_WANTED_SECONDS`. Others are not asked."""
    ids = {a.id for a in agents}
    wanted = set(s.scalars(select(Resource.agent_id).join(VaultResource, VaultResource.resource_id == Resource.id)
                           .join(Vault, Vault.id == VaultResource.vault_id)
                           .where(Resource.type == R.SERVER, Resource.agent_id.in_(ids),
                                  Vault.consistent_level == "app_consistent")))
    since = now - timedelta(seconds=READINESS_WANTED_SECONDS)
    for a in agents:
        asked = (a.inventory or {}).get(_WANTED_AT)
        try:
            if isinstance(asked, str) and datetime.fromisoformat(asked) >= since:
                wanted.add(a.id)
        except ValueError:
            pass
    return wanted


def want_readiness(agent: Agent, now: datetime) -> None:
    """check_agent asked about this agent's host: the heartbeat asks about its applications for a while."""
    agent.inventory = {**(agent.inventory or {}), _WANTED_AT: now.isoformat()}


def kept_with_inventory(old: dict | None) -> dict:
    """What a new inventory answer keeps of the old one (the readiness wish)."""
    return {_WANTED_AT: old[_WANTED_AT]} if isinstance(old, dict) and _WANTED_AT in old else {}


def check_message(ready: dict | None) -> str:
    """check_agent's message for a server (guide 7.3): whether the applications the agent found or was
    configured with can be quiesced, as its last check (a real connection to each) found."""
    ready = ready or {"state": "unsupported", "hooks": []}
    if ready.get("state") in ("checking", "not_asked"):  # not_asked: it is asked from the next heartbeat on
        return "application consistency: the agent is checking its applications; ask again in a few seconds"
    if ready.get("state") != "checked":
        return "application consistency: this agent does not check its applications (update it)"
    if ready.get("error"):
        return f"application consistency: {ready['error']}"
    apps = [h for h in ready.get("hooks") or [] if h.get("kind") != "note"]
    notes = [h["message"] for h in ready.get("hooks") or [] if h.get("kind") == "note"]
    said = [f"{h['name']} {'can be quiesced' if h['ok'] else 'cannot be quiesced'}: {h['message']}" for h in apps]
    if not apps:
        said = ["no database or script to quiesce was found or configured: an app_consistent vault's backups of "
                "this server are crash-consistent"]
    return "application consistency: " + "; ".join(said + [f"noted: {n}" for n in notes])
