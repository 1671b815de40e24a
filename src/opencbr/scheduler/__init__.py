"""The scheduler: turns policies into tasks at the right times, and sweeps retention (docs/design.md).

:class:`Scheduler` has no clock of its own: every tick reads the service context's clock (injected in
tests), and everything it needs to know about the past — which executions were decided — is in the
catalog, so any number of schedulers, restarted at any time, fire each execution exactly once
(``opencbr.services.executions``).
"""

from opencbr.scheduler.loop import Scheduler, SweepReport, TickReport

__all__ = ["Scheduler", "SweepReport", "TickReport"]
