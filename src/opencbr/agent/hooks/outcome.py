"""What one hook did: the record a backup keeps of its application consistency."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

OUTPUT_LIMIT = 16 * 1024  # bytes of a hook's output kept (the tail: errors come last)

# details that restore needs but that are too big to show (the WAL a PostgreSQL restore replays)
BULKY_DETAILS = ("wal",)


def bounded(text: str, limit: int = OUTPUT_LIMIT) -> str:
    """The last ``limit`` characters of ``text``, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"[{len(text) - limit} characters cut]\n" + text[-limit:]


@dataclass
class HookOutcome:
    """One hook (a database, or one custom script) across pre-freeze and post-thaw."""

    name: str
    kind: str  # "postgresql" | "mysql" | "script"
    ok: bool = False
    message: str = ""
    details: dict = field(default_factory=dict)
    output: str = ""
    phase: str = "pre-freeze"  # the last phase that ran: "pre-freeze" | "post-thaw"

    def fail(self, message: str) -> None:
        self.ok = False
        self.message = message

    def add_output(self, text: str) -> None:
        self.output = bounded(self.output + text)

    def as_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> dict:
        """The outcome without the bulky restore material (for a task message or ``extend_info``)."""
        d = self.as_dict()
        d["details"] = {k: v for k, v in self.details.items() if k not in BULKY_DETAILS}
        return d


class HookError(Exception):
    """A hook step failed: SQL error, timeout, client gone, refused script."""
