"""Free page reporting: why the same cold read costs a timed step 0.3 s of kernel CPU one time and 2.5 s
the next on a VM, and how a benchmark pauses it.

A virtio balloon device that reports free pages (the bench VMs' does: ``page_reporting_order`` 9, blocks
of 2 MiB) hands the guest's free memory back to the host. A benchmark that drops the page cache before
each timed step frees gigabytes at once; what the guest reports of it, the host must back again when
the step reads its data into the page cache, and the guest pays in the copies out of it
(``_copy_to_iter``). Measured on a bench VM (2026-12-07; the 2 GiB bench disk read with 4 MiB
``preadv`` after dropping the page cache, one thread): 0.31-0.34 s of kernel CPU in five runs with
reporting paused; with it on, 0.4 s or 2.3-2.6 s, the slow runs those after which 0.8 GB had been
reported. Either provider meets it, at random: one step of a pair slowed by 2.4 s moves the pair's
ratio by 20 points or more, which is what the agent benchmark's runs did for weeks.

Pausing it needs root and the ``page_reporting`` module's parameter; the order is set above the buddy
allocator's largest (10), so that no free block qualifies, and put back afterwards.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

PARAMETERS = Path("/sys/module/page_reporting/parameters")
ORDER = PARAMETERS / "page_reporting_order"
PAUSED_ORDER = 11  # above MAX_PAGE_ORDER (10): no free block is large enough to be reported


def reported_kib() -> int | None:
    """KiB reported to the host since boot, where the kernel counts it (None where it does not)."""
    try:
        return int((PARAMETERS / "reported_kib").read_text())
    except (OSError, ValueError):
        return None


def active() -> bool:
    """Free page reporting is on (a reporting balloon device and an order a free block can reach)."""
    try:
        return int(ORDER.read_text()) < PAUSED_ORDER
    except (OSError, ValueError):
        return False


@contextlib.contextmanager
def paused(enabled: bool = True):
    """Free page reporting paused inside the block (and restored after it); yields whether it was."""
    if not enabled or not active():
        yield False
        return
    before = ORDER.read_text().strip()
    try:
        ORDER.write_text(f"{PAUSED_ORDER}\n")
    except OSError:  # (not root)
        yield False
        return
    try:
        yield True
    finally:
        ORDER.write_text(f"{before}\n")


class Run:
    """What :func:`watched` saw: whether reporting was paused, else how much was reported meanwhile."""

    def __init__(self, asked: bool):
        self.asked = asked  # --pause-page-reporting was given
        self.paused = False
        self.moved_mib: float | None = None

    def summary(self) -> str:
        """One line for a benchmark's output."""
        if self.paused:
            return "free page reporting: paused for the run (put back after it)"
        if not active():
            return "free page reporting: off on this machine"
        moved = "" if self.moved_mib is None else f", {self.moved_mib:.0f} MiB reported to the host while it ran"
        return (f"free page reporting: ON{' (not root?)' if self.asked else ''}{moved}: a cold read after it costs "
                "up to ~7 times the kernel CPU, at random; --pause-page-reporting steadies the runs")


@contextlib.contextmanager
def watched(pause: bool):
    """A benchmark's run: reporting paused inside the block when ``pause`` (and it can be); yields a
    :class:`Run` whose ``summary()`` says so, or how much was reported while the block ran."""
    run = Run(pause)
    before = reported_kib()
    with paused(pause) as run.paused:
        yield run
    after = reported_kib()
    run.moved_mib = None if before is None or after is None else (after - before) / 1024
