"""Vault metrics over time (OpenCBR extension; guide 10.1): one vault's ``used_vault_size`` or
``vault_util`` series, shaped like Cloud Eye's metric data (services/metrics.py)."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Depends, Query

from opencbr.api.deps import get_ctx, principal
from opencbr.api.routing import JSONRoute
from opencbr.api.wire import Id
from opencbr.services import metrics
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

router = APIRouter(prefix="/v3/{project_id}", route_class=JSONRoute)
_EPOCH = datetime(1970, 1, 1)
#: Milliseconds since the epoch accepted for ``from`` and ``to`` (years 1970 to 2100).
_MS = {"ge": 0, "le": 4_102_444_800_000}


def _time(ms: int | None, default: datetime) -> datetime:
    return default if ms is None else _EPOCH + timedelta(milliseconds=ms)


@router.get("/vaults/{vault_id}/metrics")
def show_vault_metrics(vault_id: Id, metric_name: Id = Query(metrics.USED),
                       period: int = Query(metrics.RAW, ge=1, le=86400),
                       filter: Id = Query("average"),  # noqa: A002 - Cloud Eye's name
                       from_: int | None = Query(None, alias="from", **_MS), to: int | None = Query(None, **_MS),
                       p: Principal = Depends(principal), ctx: ServiceContext = Depends(get_ctx)):
    """Points of one metric of one vault between ``from`` and ``to`` (ms since the epoch; default: the
    past 24 hours), at ``period`` seconds (900 raw, 3600, 86400), aggregated by ``filter``."""
    now = ctx.now()
    end = _time(to, now)
    start = _time(from_, end - timedelta(days=1))
    with ctx.read() as s:
        points = metrics.series(s, p, vault_id, metric=metric_name, start=start, end=end, period=period,
                                filter_=filter)
    name, unit = metrics.METRICS[metric_name]
    return {"metric": {"namespace": "SYS.CBR", "metric_name": metric_name, "display_name": name, "unit": unit,
                       "dimensions": [{"name": "instance_id", "value": vault_id}]},
            "period": period, "filter": filter, "datapoints": [d.wire(filter) for d in points]}
