"""File names as the API shows them, and back.

Names on Linux are bytes. One that is not UTF-8 comes out of ``os.fsdecode`` with surrogate escapes (a
backup's catalog, its warnings, a browsed directory, a command-line argument), which JSON cannot carry
as text. The API shows each such byte as ``\\xNN`` (``caf\\xe9``, as ``ls -b`` does), and a path a
client sends written that way is read back to those bytes where the backup holds no path written so
(``services/files.py``)."""

from __future__ import annotations

import os
import re

_SHOWN_BYTE = re.compile(rb"\\x([89a-fA-F][0-9a-fA-F])")


def shown_name(text: str) -> str:
    """``text`` with each undecodable byte (a surrogate escape) as ``\\xNN``; any other lone surrogate
    as ``\\udXXX``. Text that is valid UTF-8 comes back unchanged."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def unshown_name(text: str) -> str:
    """The name ``text`` shows, if it was shown by :func:`shown_name`: each ``\\xNN`` of a byte from
    0x80 on read back as that byte (a surrogate escape, as ``os.fsdecode`` gives it)."""
    if "\\x" not in text:
        return text
    raw = _SHOWN_BYTE.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode("utf-8", "surrogateescape"))
    return os.fsdecode(raw)
