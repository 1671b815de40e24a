"""``cbr scheduler``: the scheduler alone, e.g. a second one on another machine sharing the catalog
(several schedulers fire each execution once)."""

from __future__ import annotations

import logging

from opencbr.config import Settings
from opencbr.scheduler import Scheduler
from opencbr.server.process import check_installation, note_stop_signals, opening_catalog, start_logging, wait_for_stop
from opencbr.services.context import open_context

log = logging.getLogger("opencbr.scheduler")


def run_scheduler(settings: Settings) -> None:
    """Tick and sweep until SIGTERM/SIGINT."""
    start_logging()
    with opening_catalog(settings):
        ctx = open_context(settings)
        check_installation(ctx)
    scheduler = Scheduler(ctx)
    stopping = note_stop_signals()
    scheduler.start()
    log.info("scheduler %s running", scheduler.scheduler_id)
    log.info("scheduler stopping (%s)", wait_for_stop(stopping))
    scheduler.shutdown()
    ctx.close()
