"""What a restore (or one process's part of it) has done so far, shared by its threads."""

from __future__ import annotations

import threading

from ..common import show
from ..results import TreeWarning

MAX_WARNINGS = 1000


class Tally:
    """Counts of what was created, bytes written, warnings (capped) and files that failed."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts = {"files": 0, "dirs": 0, "symlinks": 0, "specials": 0, "hardlinks": 0}
        self.written = 0
        self.file_bytes = 0  # sizes of the regular files created (not of hard links to them)
        self.warnings: list[TreeWarning] = []
        # (path, why): files not restored intact, the first MAX_WARNINGS of them (a restore reports
        # their number and the first); error_count counts them all
        self.errors: list[tuple[bytes, str]] = []
        self.error_count = 0

    def warn(self, rel: bytes, msg: str, partial: bool = True) -> None:
        with self.lock:
            if len(self.warnings) < MAX_WARNINGS:
                self.warnings.append(TreeWarning(show(rel), msg, partial))

    def error(self, rel: bytes, msg: str) -> None:
        """A file not restored intact (the caller holds ``lock``)."""
        self.error_count += 1
        if len(self.errors) < MAX_WARNINGS:
            self.errors.append((rel, msg))

    def add(self, other: dict) -> None:
        """Add what another part of the restore did (its :meth:`result`)."""
        for k, v in other["counts"].items():
            self.counts[k] += v
        self.written += other["written"]
        self.file_bytes += other["file_bytes"]
        self.warnings += other["warnings"][:MAX_WARNINGS - len(self.warnings)]
        self.errors += other["errors"][:MAX_WARNINGS - len(self.errors)]
        self.error_count += other["error_count"]

    def result(self) -> dict:
        return {"counts": self.counts, "written": self.written, "warnings": self.warnings, "errors": self.errors,
                "error_count": self.error_count, "file_bytes": self.file_bytes}
