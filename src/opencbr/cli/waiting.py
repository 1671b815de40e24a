"""Following tasks to their end (``--wait``, ``cbr task watch``): every command group that starts tasks
uses this, so it lives apart from the ``cbr task`` commands."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import typer

from opencbr.cli import output
from opencbr.cli.client import ApiClient, ClientError

FINISHED = ("success", "failed", "skipped", "timeout")
#: The last task still followed is asked with ``?wait=`` (the service answers when it ends, or after
#: this long: the bar moves at least this often); with several, each is looked at in turn as before.
HOLD_SECONDS = 1.0


def next_look(waited: float, longest: float = 0.5, left: float | None = None) -> float:
    """Seconds until the next look at a task followed for ``waited`` seconds: a tenth of that, between
    20 ms and ``longest``. Most tasks a user waits on end within a second (an unchanged backup), so the
    wait ends within ~10 % of the task's time instead of up to half a second after it; a long task costs
    two requests a second, as before.

    ``left``: the seconds its pace says the task still needs (:class:`Pace`); near its end the looks
    come sooner, a quarter of that (at least 50 ms apart). A first backup of a few seconds otherwise
    ended on average a quarter of a second before ``--wait`` looked (up to half a second); a long task
    reaches that pace in its last seconds only, so it costs a few requests more, at its end."""
    look = min(longest, max(0.02, waited / 10))
    if left is not None:
        look = min(look, max(0.05, left / 4))
    return look


class Pace:
    """How long a task still needs, from the progress seen since it was first looked at (nothing is
    known until its progress moved: a task watched at 99 % for a while is not looked at more often)."""

    def __init__(self):
        self.first: tuple[float, int] | None = None

    def left(self, now: float, progress: int) -> float | None:
        if self.first is None:
            self.first = (now, progress)
            return None
        t0, p0 = self.first
        if progress <= p0 or progress >= 100:
            return None
        return (now - t0) * (100 - progress) / (progress - p0)


def wait_for(c: ApiClient, task_ids: list[str], *, quiet: bool = False, poll: float = 0.5) -> list[dict]:
    """Follow tasks to the end with a progress bar each, labelled with what the task works on; returns
    their final operation logs. Ctrl-C stops following, not the tasks: it says how to follow them again.
    ``quiet`` (``--json``) shows no bars, and then does not import rich at all."""
    done: dict[str, dict] = {}
    bars = _Bars()
    try:
        if quiet:
            _follow(c, task_ids, done, poll, lambda tid, log: None)
        else:
            bars.load_meanwhile()
            try:
                _follow(c, task_ids, done, poll, bars.show)
            finally:
                bars.close()
    except KeyboardInterrupt:
        running = [t for t in task_ids if t not in done]
        output.err_console.print(f"\nstopped waiting; {'the task keeps' if len(running) == 1 else 'the tasks keep'} "
                                 f"running on the service: {', '.join(running)}\n"
                                 f"follow with: cbr task watch {' '.join(running)}", highlight=False)
        raise typer.Exit(130) from None
    return [done[t] for t in task_ids]


class _Bars:
    """The bars of the tasks followed, made at the first look's answer. rich is imported on a thread of its
    own meanwhile (:meth:`load_meanwhile`): the first look is held by the service until the task ends or a
    second passed, and the GIL is free while it waits, so the ~50 ms rich costs a cold start (the bars,
    then the table of the result) no longer add to the time a user waits for a task.

    No refresh thread (``auto_refresh``): the bars are drawn at each look. A Ctrl-C that lands while the
    main thread holds rich's lock would leave the exit joining a thread that waits for it: ``--wait`` then
    hung instead of saying how to follow the task. (The loading thread takes no lock of rich's, and is a
    daemon: an exit does not wait for it.)"""

    def __init__(self):
        self.progress = None
        self.ids: dict[str, int] = {}

    def load_meanwhile(self) -> None:
        threading.Thread(target=_import_rich, name="cbr-load-rich", daemon=True).start()

    def show(self, tid: str, log: dict) -> None:
        if self.progress is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                     TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                                     console=output.err_console, transient=False, auto_refresh=False)
            self.progress.start()
        if tid not in self.ids:
            self.ids[tid] = self.progress.add_task(task_label(log), total=100)
        self.progress.update(self.ids[tid], completed=log["extra_info"]["common"]["progress"],
                             description=f"{task_label(log)} [{log['status']}]", refresh=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _import_rich() -> None:
    """What the bars and the result's table import (their own imports wait for this one, or find it done)."""
    try:
        import rich.progress  # noqa: F401
        import rich.table  # noqa: F401
    except Exception:  # (imported again where needed, which then says what is wrong)
        pass


def _follow(c: ApiClient, task_ids: list[str], done: dict[str, dict], poll: float,
            show: Callable[[str, dict], None]) -> None:
    """Look at each unfinished task and ``show`` it (its id, its log) until all have finished (into ``done``)."""
    started = time.monotonic()
    paces = {tid: Pace() for tid in task_ids}
    while len(done) < len(task_ids):
        left = None  # the seconds the unfinished task closest to its end still needs, as far as known
        hold = HOLD_SECONDS if len(task_ids) - len(done) == 1 else 0.0
        asked = time.monotonic()
        for tid in task_ids:
            if tid in done:
                continue
            log = c.get(f"/operation-logs/{tid}", **({"wait": f"{hold:g}"} if hold else {}))["operation_log"]
            show(tid, log)
            if log["status"] in FINISHED:
                done[tid] = log
            elif (need := paces[tid].left(time.monotonic(), _progress(log))) is not None:
                left = need if left is None else min(left, need)
        held = hold and time.monotonic() - asked >= hold * 0.9  # (a service before `wait` answers at once)
        if len(done) < len(task_ids) and not held:
            time.sleep(next_look(time.monotonic() - started, poll, left))


def _progress(log: dict) -> int:
    try:
        return int((log.get("extra_info") or {}).get("common", {}).get("progress") or 0)
    except (TypeError, ValueError):
        return 0


def task_label(log: dict) -> str:
    """``backup web1``: the kind of work and what it works on."""
    target = (log.get("extra_info") or {}).get("resource", {}).get("name") or log.get("vault_name") or log["id"][:8]
    return f"{log['operation_type'].replace('_', ' ')} {target}"


def raise_if_failed(logs: list[dict]) -> None:
    failed = [lg for lg in logs if lg["status"] != "success"]
    if failed:
        lg = failed[0]
        raise ClientError(f"task {lg['id']} {lg['status']}: {lg['error_info']['message']}",
                          code=lg["error_info"]["code"])
