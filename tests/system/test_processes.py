"""A child asked to die with its parent does; the liveness of recorded pids of this host."""

from __future__ import annotations

import os
import select
import signal
import time

from opencbr.system.libc import function, libc
from opencbr.system.processes import local_process_gone, process_namespace, stop_with_parent


def test_the_c_library_is_loaded_once_and_missing_functions_are_none():
    assert libc() is libc()
    assert function("getpid", restype=__import__("ctypes").c_int)() == os.getpid()
    assert function("no_such_function_in_libc") is None


def test_a_grandchild_dies_with_its_parent():
    """The grandchild holds the only writer of a pipe: its end (EOF) is its death, zombie or not."""
    r, w = os.pipe()
    child = os.fork()
    if child == 0:  # the parent-to-be of the grandchild: forks it, then dies
        try:
            me = os.getpid()
            if os.fork() == 0:
                if not stop_with_parent(me, signal.SIGKILL):
                    os._exit(3)
                time.sleep(60)
        finally:
            os._exit(0)
    os.close(w)
    os.waitpid(child, 0)
    poller = select.poll()
    poller.register(r, select.POLLIN | select.POLLHUP)
    try:
        assert poller.poll(10_000), "the grandchild outlived its parent"
        assert os.read(r, 1) == b""
    finally:
        os.close(r)


def test_liveness_is_only_judged_in_our_own_namespace():
    assert not local_process_gone(process_namespace(), os.getpid())
    assert not local_process_gone("other-host.0.0", 999999)
