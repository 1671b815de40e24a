"""The heap settings of a disk backup last as long as a disk backup runs (agent/tasks/operations.py):
the agent is long-lived, and with the 32 MiB trim threshold left behind, every thread's arena of a later
task kept up to 32 MiB of freed memory (a tree backup after a disk backup peaked at 207-229 MB instead
of ~145 in bench/agent.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CHURN = textwrap.dedent("""
    import os
    import threading
    import time
    from opencbr.agent.tasks import operations as op

    def rss_mb():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024

    def churn(together):
        # buffers below the mmap threshold: served from this thread's arena, all freed at the end; the four
        # threads allocate while all of them are alive, so that each has an arena of its own (one after
        # another, as a loaded machine may run them, they would share one: the later round then never
        # touches the others, and what the disk backup left in them stays)
        together.wait()
        held = [bytearray(2 << 20) for _ in range(12)]
        together.wait()
        del held

    def os_threads():
        return len(os.listdir("/proc/self/task"))

    def four_threads():
        together = threading.Barrier(4)
        before = os_threads()
        ts = [threading.Thread(target=churn, args=(together,)) for _ in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        # join() returns when a thread's Python state is gone; the thread itself hands its arena back to
        # glibc's free list a moment later, as it exits. A later round started before that (a loaded
        # machine) gets new arenas, and the old ones, never used again, keep their tops.
        deadline = time.monotonic() + 10
        while os_threads() > before and time.monotonic() < deadline:
            time.sleep(0.01)

    base = rss_mb()
    with op._heap_for_segments():
        four_threads()
        during = rss_mb() - base
    after_disk = rss_mb() - base
    four_threads()  # a later task's threads
    print(during, after_disk, rss_mb() - base)
""")


def test_a_disk_backups_heap_settings_end_with_it_and_free_memory_goes_back():
    out = subprocess.run([sys.executable, "-c", CHURN], capture_output=True, text=True, check=True, timeout=60)
    during, after_disk, later = (float(x) for x in out.stdout.split())
    # while a disk backup runs, freed segment buffers stay in the arenas (reused without page faults)
    assert during > 40, out.stdout
    # when it ends, a later task's threads keep nothing they freed, and what the disk backup's threads
    # left at the top of their arenas goes back as those arenas are used again (glibc trims a heap's
    # top only on a free in it; with the disk backup's 32 MiB threshold left behind: ~70 MB kept)
    assert later < 35, out.stdout
    assert after_disk <= during + 5, out.stdout
