"""Processes: the signal a child gets when its parent dies, and whether a pid recorded by this host
is still alive (used to clear what dead writers left behind)."""

from __future__ import annotations

import os
import signal
import socket

from .libc import function

PR_SET_PDEATHSIG = 1


def stop_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (``PR_SET_PDEATHSIG``;
    Linux, a no-op elsewhere). Call first thing in a child; ``parent_pid`` is the parent's pid as the
    child saw it before. Returns False when the parent died before the request took effect: the caller
    must then stop by itself."""
    prctl = function("prctl")
    if prctl is not None:
        prctl(PR_SET_PDEATHSIG, int(sig))
    return os.getppid() == parent_pid


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def process_namespace() -> str:
    """Where a pid means something: this machine's host name, boot and PID namespace, as one token
    (letters, digits, ``_`` and ``.``). Two containers sharing a host name, or two clones of one VM,
    get different tokens, so a pid recorded under one is never looked up in another."""
    try:
        pidns = str(os.stat("/proc/self/ns/pid").st_ino)
    except OSError:
        pidns = "0"
    boot = _read("/proc/sys/kernel/random/boot_id").replace("-", "")[:12] or "0"
    host = "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:40]
    return f"{host}.{boot}.{pidns}"


def local_process_gone(namespace: str, pid: int) -> bool:
    """True when ``namespace`` (a :func:`process_namespace` token) is this process's own — same host,
    boot and PID namespace — and process ``pid`` no longer exists (and is not us). A bare host name never
    matches: the same pid in another PID namespace is another process."""
    if not pid or namespace != process_namespace() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
