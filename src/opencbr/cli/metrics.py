"""``cbr metrics``: a vault's usage over time (guide 10.1: used_vault_size, vault_util), as the scheduler
sampled it every 15 minutes. Registered by ``cli.main``."""

from __future__ import annotations

import time

import typer

from opencbr.cli import refs
from opencbr.cli.output import JSON_OPTION, client, handle_errors, print_json, table

metrics_app = typer.Typer(help="Vault metrics over time: used_vault_size (GB) and vault_util (%).",
                          no_args_is_help=True)
#: --period's names: the resolutions the service keeps (raw for a week, hours for a month, days for a year).
PERIODS = {"15m": 900, "1h": 3600, "1d": 86400}


@metrics_app.command("show")
@handle_errors
def metrics_show(vault: str = typer.Argument(..., help="The vault: id, name or id prefix."),
                 metric: str = typer.Option("used_vault_size", "--metric", "-m",
                                            help="used_vault_size (GB) or vault_util (%)."),
                 period: str = typer.Option("15m", "--period", help="15m (the raw samples), 1h or 1d."),
                 filter_: str = typer.Option("average", "--filter", help="average, min or max within each period."),
                 hours: float = typer.Option(24, "--hours", help="How far back to look."),
                 as_json: bool = JSON_OPTION):
    """One metric of one vault over the past hours.

    Example: cbr metrics show my-vault --metric vault_util --period 1h --hours 168"""
    if period not in PERIODS:
        raise typer.BadParameter(f"--period must be one of {', '.join(PERIODS)}")
    c = client()
    vault_id = refs.resolve(c, refs.VAULT, vault)
    to = int(time.time() * 1000)
    answer = c.request("GET", f"/vaults/{vault_id}/metrics", params={
        "metric_name": metric, "period": PERIODS[period], "filter": filter_, "from": to - int(hours * 3600_000),
        "to": to})
    if as_json:
        print_json(answer)
        return
    m = answer["metric"]
    rows = [{"time": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(p["timestamp"] / 1000)) + " UTC",
             "value": p[filter_]} for p in answer["datapoints"]]
    table(rows, [("time", "Time"), ("value", f"{m['display_name']} ({m['unit']}, {filter_})")],
          title=f"{m['metric_name']} of vault {vault} per {period}")
