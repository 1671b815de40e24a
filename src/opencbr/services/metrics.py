"""Vault usage over time (guide 10.1): ``used_vault_size`` (GB) and ``vault_util`` (0-100 %) per vault,
sampled every 15 minutes (the guide's raw monitoring period) by the scheduler.

Storage is bounded: each sample is written once at the raw resolution and folded at once into the hour
and the day it belongs to (count, average, minimum, maximum), and each resolution keeps a fixed history
(``RETENTION``): at most 672 + 744 + 400 rows per vault, whatever its age. A query picks the resolution
from the period it asks for, like Cloud Eye's rolled-up data.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from opencbr.catalog.models import Vault, VaultMetricPoint
from opencbr.domain.errors import InvalidParameter
from opencbr.services import lookups, memberships
from opencbr.services.context import ServiceContext
from opencbr.services.principal import Principal

GB = 1024**3
RAW, HOUR, DAY = 900, 3600, 86400
#: Guide 10.1: both metrics have a raw monitoring period of 15 minutes.
SAMPLE_SECONDS = RAW
#: How long each resolution is kept: raw points a week, hourly a month, daily over a year.
RETENTION = {RAW: timedelta(days=7), HOUR: timedelta(days=31), DAY: timedelta(days=400)}
PERIODS = tuple(RETENTION)
USED, UTIL = "used_vault_size", "vault_util"
#: Guide table 10-1: metric id -> (readable name, unit).
METRICS = {USED: ("Used Vault Size", "GB"), UTIL: ("Vault Usage", "%")}
FILTERS = ("average", "min", "max")
#: The most points one query returns (a year of hours is 8784).
MAX_POINTS = 2000

INVALID_METRIC = "BackupService.6601"
INVALID_QUERY = "BackupService.6602"


@dataclass(frozen=True)
class VaultSample:
    vault_id: str
    project_id: str
    vault_name: str
    used_bytes: int
    util: float
    threshold: int
    smn_notify: bool


@dataclass(frozen=True)
class Datapoint:
    at: datetime
    value: float

    def wire(self, filter_: str) -> dict:
        return {"timestamp": _ms(self.at), filter_: round(self.value, 4)}


def _ms(naive_utc: datetime) -> int:
    return int((naive_utc - datetime(1970, 1, 1)).total_seconds() * 1000)


def bucket(at: datetime, period: int) -> datetime:
    """The start of the period ``at`` falls in (periods are aligned to the UTC epoch)."""
    seconds = int((at - datetime(1970, 1, 1)).total_seconds())
    return datetime(1970, 1, 1) + timedelta(seconds=seconds - seconds % period)


def utilisation(vault: Vault) -> tuple[int, float]:
    """Used bytes and the share of the capacity they take, in percent, 0 to 100 (guide table 10-1)."""
    used = memberships.counted_bytes(vault)
    capacity = max(1, int(vault.size_gb or 0)) * GB
    return used, min(100.0, max(0.0, used * 100.0 / capacity))


def _fold(s: Session, vault: Vault, period: int, at: datetime, used: int, util: float) -> None:
    """Add one sample to the point of ``period`` starting at ``at`` (a running average)."""
    p = s.scalar(select(VaultMetricPoint).where(VaultMetricPoint.vault_id == vault.id,
                                                VaultMetricPoint.period == period, VaultMetricPoint.at == at))
    if p is None:
        s.add(VaultMetricPoint(vault_id=vault.id, project_id=vault.project_id, period=period, at=at, samples=1,
                               used_avg=float(used), used_min=used, used_max=used, util_avg=util, util_min=util,
                               util_max=util))
        return
    n = p.samples
    p.used_avg = (p.used_avg * n + used) / (n + 1)
    p.util_avg = (p.util_avg * n + util) / (n + 1)
    p.used_min, p.used_max = min(p.used_min, used), max(p.used_max, used)
    p.util_min, p.util_max = min(p.util_min, util), max(p.util_max, util)
    p.samples = n + 1


def sample_vaults(ctx: ServiceContext, now: datetime | None = None) -> list[VaultSample]:
    """Sample every vault once for the 15-minute period ``now`` falls in (the scheduler calls it every
    tick; a period already sampled, by this or another scheduler, is skipped). One transaction per vault.
    Returns the samples taken."""
    now = now or ctx.now()
    at = bucket(now, RAW)
    with ctx.read() as s:
        done = set(s.scalars(select(VaultMetricPoint.vault_id).where(VaultMetricPoint.period == RAW,
                                                                     VaultMetricPoint.at == at)))
        vault_ids = [v for v in s.scalars(select(Vault.id).order_by(Vault.id)) if v not in done]
    taken: list[VaultSample] = []
    for vault_id in vault_ids:
        try:
            with ctx.tx() as s:
                vault = s.get(Vault, vault_id)
                if vault is None:
                    continue
                used, util = utilisation(vault)
                s.add(VaultMetricPoint(vault_id=vault.id, project_id=vault.project_id, period=RAW, at=at, samples=1,
                                       used_avg=float(used), used_min=used, used_max=used, util_avg=util,
                                       util_min=util, util_max=util))
                s.flush()  # the unique key: another scheduler sampled this period first
                _fold(s, vault, HOUR, bucket(now, HOUR), used, util)
                _fold(s, vault, DAY, bucket(now, DAY), used, util)
                taken.append(VaultSample(vault.id, vault.project_id, vault.name, used, util, int(vault.threshold),
                                         bool(vault.smn_notify)))
        except IntegrityError:
            continue
    return taken


def prune(s: Session, now: datetime) -> int:
    """Drop the points older than their resolution keeps (``RETENTION``); the number dropped."""
    dropped = 0
    for period, keep in RETENTION.items():
        dropped += s.execute(delete(VaultMetricPoint).where(VaultMetricPoint.period == period,
                                                            VaultMetricPoint.at < now - keep)).rowcount or 0
    return dropped


def _column(metric: str, filter_: str):
    name = {"average": "avg", "min": "min", "max": "max"}[filter_]
    return getattr(VaultMetricPoint, f"{'used' if metric == USED else 'util'}_{name}")


def series(s: Session, p: Principal, vault_id: str, *, metric: str, start: datetime, end: datetime,
           period: int = RAW, filter_: str = "average") -> list[Datapoint]:
    """The vault's points of ``metric`` between ``start`` and ``end`` at the resolution ``period``
    (900, 3600 or 86400 s), aggregated by ``filter_`` (average, min, max); ``used_vault_size`` in GB."""
    if metric not in METRICS:
        raise InvalidParameter(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}", code=INVALID_METRIC)
    if period not in PERIODS:
        raise InvalidParameter(f"period must be one of {', '.join(map(str, PERIODS))} seconds", code=INVALID_QUERY)
    if filter_ not in FILTERS:
        raise InvalidParameter(f"filter must be one of {', '.join(FILTERS)}", code=INVALID_QUERY)
    if end <= start:
        raise InvalidParameter("the end of the time range must be after its start", code=INVALID_QUERY)
    if (end - start).total_seconds() / period > MAX_POINTS:
        raise InvalidParameter(f"at most {MAX_POINTS} points per query: choose a longer period or a shorter "
                               "range", code=INVALID_QUERY)
    lookups.get_vault(s, p.project_id, vault_id)
    col = _column(metric, filter_)
    rows = s.execute(select(VaultMetricPoint.at, col).where(
        VaultMetricPoint.vault_id == vault_id, VaultMetricPoint.period == period,
        VaultMetricPoint.at >= bucket(start, period), VaultMetricPoint.at <= end).order_by(VaultMetricPoint.at))
    scale = 1.0 / GB if metric == USED else 1.0
    return [Datapoint(at, float(value) * scale) for at, value in rows]
