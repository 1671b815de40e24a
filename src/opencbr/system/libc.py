"""The C library, loaded once per process (Linux/glibc; None elsewhere).

The running program's own symbols (``CDLL(None)``) rather than ``find_library("c")``: the latter runs
``ldconfig`` and a compiler probe, which forked helpers would otherwise pay on every start. No lock:
forked helpers call this, and a lock held by another thread at the fork would never be released;
two threads racing merely load the same handle twice."""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def libc() -> ctypes.CDLL | None:
    """The C library with ``errno`` kept per call (``ctypes.get_errno``), or None if it can't be loaded."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


@functools.cache
def function(name: str, argtypes: tuple = (), restype=ctypes.c_int):
    """The C library's function ``name`` with its argument and result types set, or None where the C
    library or the function is missing (non-glibc systems). Each call site gets its own function
    object, so one caller's types never change another's."""
    lib = libc()
    if lib is None or not hasattr(lib, name):
        return None
    fn = ctypes.CFUNCTYPE(restype, *argtypes, use_errno=True)((name, lib)) if argtypes else getattr(lib, name)
    if not argtypes:
        fn.restype = restype
    return fn
