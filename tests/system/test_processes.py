"""A child asked to die with its parent does; the liveness of recorded pids of this host."""

from __future__ import annotations

import os
import signal
import time

from opencbr.system.libc import function, libc
from opencbr.system.processes import local_process_gone, process_namespace, stop_with_parent


def test_the_c_library_is_loaded_once_and_missing_functions_are_none():
    assert libc() is libc()
    assert function("getpid", restype=__import__("ctypes").c_int)() == os.getpid()
    assert function("no_such_function_in_libc") is None


def test_a_grandchild_dies_with_its_parent():
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # the parent-to-be of the grandchild: forks it, tells its pid, then dies
        try:
            me = os.getpid()
            grandchild = os.fork()
            if grandchild == 0:
                if not stop_with_parent(me, signal.SIGKILL):
                    os._exit(3)
                time.sleep(60)
                os._exit(0)
            os.write(w, str(grandchild).encode())
        finally:
            os._exit(0)
    os.close(w)
    grandchild = int(os.read(r, 64))
    os.close(r)
    os.waitpid(child, 0)
    deadline = time.monotonic() + 10
    while not _gone(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(grandchild)


def _gone(pid: int) -> bool:
    """Dead: no such process, or a zombie not reaped yet (init in a container may never reap it)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return any(line.startswith("State:") and "Z" in line.split()[1] for line in f)
    except FileNotFoundError:
        return True


def test_liveness_is_only_judged_in_our_own_namespace():
    assert not local_process_gone(process_namespace(), os.getpid())
    assert not local_process_gone("other-host.0.0", 999999)
