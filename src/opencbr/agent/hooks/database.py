"""What the database hooks share: one client session per hook, its transcript kept in the outcome when
it ends, and the readiness check's shape (connect, read the server's facts, test the privileges)."""

from __future__ import annotations

from .outcome import HookError, HookOutcome


class DatabaseHook:
    """A database quiesced through one client session (``self.client``) across the snapshot.

    Subclasses give ``kind``, ``READY`` (the check's message when nothing is missing), ``_connect()``,
    ``_facts(client, timeout)`` and ``_readiness(client, facts, timeout)``."""

    kind = ""
    READY = "can be quiesced"

    def __init__(self, target):
        self.target = target
        self.outcome = HookOutcome(name=target.name, kind=self.kind)
        self.client = None

    def _end(self) -> None:
        """Close the session (if open) and keep what it said."""
        if self.client is not None:
            self.client.close()
            self.outcome.add_output(self.client.transcript)
            self.client = None

    def check(self, timeout: float) -> dict:
        """Whether this database can be quiesced: connected as the hook would, privileges asked of the
        server itself. ``ok`` is false with the reasons in ``message`` when something is missing."""
        result = {"name": self.target.name, "kind": self.kind, "ok": False, "message": "",
                  "data_dir": self.target.data_dir, "privileges": {}}
        client = None
        try:
            client = self._connect()
            facts = self._facts(client, timeout)
            privileges, problems, notes, shown = self._readiness(client, facts, timeout)
            result.update(shown, privileges=privileges, ok=not problems)
            result["message"] = "; ".join(problems + notes) or self.READY
        except HookError as e:
            result["message"] = str(e)
        finally:
            if client is not None:
                client.close()
        return result

    def _readiness(self, client, facts: dict, timeout: float) -> tuple[dict, list[str], list[str], dict]:
        """(privileges found, problems that prevent quiescing, notes, facts to show)."""
        raise NotImplementedError
