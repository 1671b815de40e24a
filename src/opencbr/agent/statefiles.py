"""The agent's own small JSON records in its state directory (``snapshots.json``, ``made.json``): read
and replaced without following a symbolic link.

The state directory is the agent's, but nothing stops an operator from placing it below a root
(``--root /var/lib`` with the default ``/var/lib/opencbr-agent``), and then a tenant's restore can put
entries in it: a tree backup's symlinks are restored verbatim. A record written by opening
``<name>.tmp`` for writing followed a symlink planted there, anywhere on the host (``/etc/shadow``
truncated and overwritten with JSON, as root); then the rename put the symlink itself in the record's
place, and the next read followed it. Here the temporary file is made exclusively (``O_CREAT | O_EXCL
| O_NOFOLLOW``, after removing whatever had that name: a symlink is removed as a link) and a record is
read with ``O_NOFOLLOW``: a symlink there reads as missing.
"""

from __future__ import annotations

import errno
import json
import os
import stat


def read_json(path: str):
    """The JSON in ``path``; FileNotFoundError when missing or not a regular file (a symlink, say),
    ValueError when not JSON."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise FileNotFoundError(errno.ENOENT, "a symbolic link, not the agent's record", path) from None
        raise
    with os.fdopen(fd, encoding="utf-8") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise FileNotFoundError(errno.ENOENT, "not a regular file, not the agent's record", path)
        return json.load(f)


def write_json(path: str, data, *, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` as JSON: a new temporary file beside it (never opened through
    what was at its name), fsync, rename."""
    tmp = path + ".tmp"
    try:
        os.unlink(tmp)  # (a symlink goes as a link; a directory there fails the write below)
    except FileNotFoundError:
        pass
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            fd = -1
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
