"""The replication receiver (docs/replication.md) in a worker process: every worker process of a machine
whose settings name ``replication_listen`` tries to bind it; the first one serves it, the others try again
every few seconds (so that the receiver comes back when the process serving it is restarted)."""

from __future__ import annotations

import logging
import threading

from opencbr.services import regions, replication
from opencbr.services.context import ServiceContext

log = logging.getLogger("opencbr.replication")
RETRY_SECONDS = 3.0


def start_receiver(ctx: ServiceContext, stop: threading.Event) -> threading.Thread | None:
    if not ctx.settings.replication_listen:
        return None
    t = threading.Thread(target=_serve, args=(ctx, stop), name="replication-receiver", daemon=True)
    t.start()
    return t


def _serve(ctx: ServiceContext, stop: threading.Event) -> None:
    server = None
    while server is None and not stop.is_set():
        try:
            server = regions.receiver_server(ctx, replication.receive)
        except OSError:
            stop.wait(RETRY_SECONDS)  # another process serves it
        except Exception:  # noqa: BLE001 - the catalog is not ready yet: try again
            log.exception("the replication receiver cannot start")
            stop.wait(RETRY_SECONDS)
    if server is None:
        return
    server.start()
    log.info("replication receiver listening on %s:%s", *server.address)
    stop.wait()
    server.stop()
