"""`vpp-aggregator replay`: real driver behaviour through the whole market loop on a simulated
clock (`replay/`), with a progress bar, a table of the totals and the full figures as JSON."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

console = Console(stderr=True)


def replay(
    sessions: Annotated[Path, typer.Option(help="Sessions CSV (the ACN format, or Norway's)")],
    start: Annotated[str, typer.Option("--from", help="First replayed day (local, YYYY-MM-DD)")],
    end: Annotated[str, typer.Option("--to", help="Day after the last replayed day")],
    json_out: Annotated[Path, typer.Option("--json", help="Write every figure here")],
    weather: Annotated[
        Path | None, typer.Option(help="Hourly weather CSV (hour_utc, temperature, precipitation)")
    ] = None,
    fleet: Annotated[
        str | None,
        typer.Option(help="e.g. 'ev=200,bess=4,bess_kwh=500,per_week=0.5,nodes=1'"),
    ] = None,
    fleet_from: Annotated[
        str | None,
        typer.Option(
            help="Draw the fleet's drivers from the days from this one (with --fleet-to) "
            "instead of the replayed ones: a week with a year's fleet, as a part of that year "
            "replays it"
        ),
    ] = None,
    fleet_to: Annotated[
        str | None, typer.Option(help="The day after the last the fleet is drawn from")
    ] = None,
    quantile: Annotated[
        str, typer.Option(help="Offer quantile: p5, p10, p20, p30, p50 (or p90)")
    ] = "p10",
    award_share: Annotated[float, typer.Option(help="Share of each offer awarded")] = 1.0,
    timezone: Annotated[str, typer.Option(help="The site's time zone")] = "America/Los_Angeles",
    site: Annotated[str | None, typer.Option(help="Keep one site of a multi-site file")] = None,
    data_dir: Annotated[
        Path, typer.Option(help="Where prices_nl/ev_specs_v2g_enabled2024.json is")
    ] = Path("../shared/data"),
    seed: Annotated[int, typer.Option(help="Seed of the fleet and the devices")] = 19,
    refusal_share: Annotated[float, typer.Option(help="Share of commands refused")] = 0.01,
    dropout_share: Annotated[float, typer.Option(help="Share of samples lost")] = 0.005,
    delay_s: Annotated[float, typer.Option(help="Seconds before a command acts")] = 4.0,
    warmup_days: Annotated[int, typer.Option(help="Days replayed before --from, unscored")] = 28,
    chart: Annotated[
        Path | None, typer.Option(help="Also draw the days as an SVG chart here")
    ] = None,
    baseline: Annotated[
        str,
        typer.Option(help="Settlement baseline of the vehicles: caiso_10in10, pjm_cbl, metered"),
    ] = "caiso_10in10",
    jobs: Annotated[
        int,
        typer.Option(
            min=1,
            help="Replay the period in this many consecutive parts at once, one process each, "
            "each after its own warm-up (docs/replay.md); 1: one continuous replay",
        ),
    ] = 1,
    setting: Annotated[
        list[str] | None,
        typer.Option(
            help="A service setting for the replay, KEY=VALUE (repeatable), e.g. "
            "VPP_NEED_FLOOR_EARLY_LEAVES=2"
        ),
    ] = None,
) -> None:
    """Replay the drivers of a sessions file with forecast, offers, awards, dispatch,
    follow-through and settlement running as in service; print the totals and write the
    per-day figures, interval shortfalls with their causes and departures as JSON."""
    from vpp_aggregator.replay.devices import Behaviour
    from vpp_aggregator.replay.fleet import FleetSpec
    from vpp_aggregator.replay.parts import run
    from vpp_aggregator.replay.runner import ReplaySpec

    try:
        if (fleet_from is None) != (fleet_to is None):
            raise ValueError("--fleet-from and --fleet-to go together")
        fleet_days = (
            (date.fromisoformat(fleet_from), date.fromisoformat(fleet_to))
            if fleet_from is not None and fleet_to is not None
            else None
        )
        spec = ReplaySpec(
            sessions=sessions,
            start=date.fromisoformat(start),
            end=date.fromisoformat(end),
            data_dir=data_dir,
            weather=weather,
            site=site,
            fleet=FleetSpec.parse(fleet),
            quantile=quantile,
            award_share=award_share,
            timezone=timezone,
            behaviour=Behaviour(
                command_delay_s=delay_s,
                refusal_share=refusal_share,
                dropout_share=dropout_share,
                seed=seed,
            ),
            seed=seed,
            warmup_days=warmup_days,
            baseline=baseline,
            settings=dict(_key_value(s) for s in setting or []),
            fleet_days=fleet_days,
        )
        spec.check()
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f} %"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task(f"replaying {start} .. {end}", total=1.0)
        result = run(spec, jobs, lambda done: bar.update(task, completed=done))
    json_out.write_text(json.dumps(result, indent=1))
    if chart is not None:
        from vpp_aggregator.replay.chart import svg

        chart.write_text(svg(result, f"{sessions.stem} {start} .. {end}, offers at {quantile}"))
    console.print(_table(result["totals"]))
    console.print(f"every figure: [bold]{json_out}[/bold]")


def _table(t: dict[str, Any]) -> Table:
    table = Table(title="replay totals")
    table.add_column("figure")
    table.add_column("value", justify="right")
    awarded = t["awarded_kwh"] or 0.0
    rows = [
        ("offered kWh", f"{t['offered_kwh']:,.1f}"),
        ("awarded kWh", f"{t['awarded_kwh']:,.1f}"),
        ("delivered kWh", f"{t['delivered_kwh']:,.1f}"),
        ("delivered / awarded", f"{t['delivered_kwh'] / awarded:.1%}" if awarded else "-"),
        (
            "intervals in full",
            f"{t['intervals_delivered_in_full']:,} of {t['intervals_awarded']:,}",
        ),
        ("departures met", f"{t['departures_met']:,} of {t['departures']:,}"),
        ("safety violations", f"{t['safety_violations']:,}"),
    ]
    rows += [
        (f"shortfall: {c}", f"{k:,.1f} kWh") for c, k in t["shortfall_causes_kwh"].items() if k
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--setting {text!r} is not KEY=VALUE")
    return key.strip(), value.strip()
