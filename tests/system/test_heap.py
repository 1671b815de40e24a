"""Freed heap memory is kept for reuse while an operation asks for it, and only then
(system/heap.py): overlapping operations keep the largest setting until the last one ends."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from opencbr.system.libc import function as libc_function

# Each scenario in a fresh interpreter: the settings are process-wide. Sixteen 1 MiB buffers from the
# main heap (the mmap threshold fixed above them, as the backups fix it), freed from the top down: with
# the trim threshold at 128 KiB glibc gives the top of the heap back at each free; kept, it stays.
SCENARIO = textwrap.dedent("""
    import ctypes, sys
    from opencbr.system import heap

    ctypes.CDLL(None).mallopt(-3, 8 << 20)  # M_MMAP_THRESHOLD, as limit_heap_growth() sets it

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024

    def held_now():
        # what stays resident after 16 MiB were allocated, written and freed again
        before = rss_mb()
        held = [bytearray(1 << 20) for _ in range(16)]
        while held:
            held.pop()
        return round(rss_mb() - before)

    BASE = rss_mb()  # before any churn: what stays after a block shows against it
    out = []
    if sys.argv[1] == "alone":
        out.append(held_now())
        with heap.free_heap_kept(32 << 20):
            out.append(held_now())
        out.append(round(rss_mb() - BASE))
    else:  # overlapping: a small setting ends while a large one still holds
        big, small = heap.free_heap_kept(32 << 20), heap.free_heap_kept(1 << 20)
        big.__enter__()
        small.__enter__()
        small.__exit__(None, None, None)
        out.append(held_now())
        big.__exit__(None, None, None)
        out.append(round(rss_mb() - BASE))
    print(*out)
""")


def run(scenario: str) -> list[int]:
    done = subprocess.run([sys.executable, "-c", SCENARIO, scenario], capture_output=True, text=True, check=True,
                          timeout=60)
    return [int(x) for x in done.stdout.split()]


needs_glibc = pytest.mark.skipif(libc_function("mallopt") is None, reason="glibc's mallopt is not available")


@needs_glibc
def test_freed_buffers_stay_for_reuse_only_while_kept():
    before, during, after = run("alone")
    assert before <= 2, "the default gives the freed top of the heap back"
    assert during >= 12, "while kept, the freed 16 MiB stay for the next buffers"
    assert after <= 2, "when the block ends the kept memory goes back"


@needs_glibc
def test_overlapping_operations_keep_the_largest_setting_until_the_last_ends():
    while_big_holds, after_both = run("overlap")
    assert while_big_holds >= 12, "the small operation's end must not drop the large one's setting"
    assert after_both <= 2
