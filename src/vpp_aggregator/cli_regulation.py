"""`vpp-aggregator regulation replay`: a regulation signal file against the simulated fleet,
scored hour by hour as PJM scores a response (`demo/regulation.py`)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from vpp_aggregator.demo.constants import PACKAGED_DATA_DIR

regulation_app = typer.Typer(help="Frequency regulation: replay a signal and score the response.")
console = Console(stderr=True)
REGA = PACKAGED_DATA_DIR / "pjm_regulation" / "rega_2017-08-01_1600-2400.csv"


@regulation_app.command("replay")
def regulation_replay(
    capacity_kw: Annotated[float, typer.Option(help="Regulation capacity sold, kW up and down")],
    signal: Annotated[
        Path, typer.Option(help="Signal CSV: a timestamp column and a −1…+1 value column")
    ] = REGA,
    fleet: Annotated[
        int | None, typer.Option(help="Resources (default: the sizing rule's count)")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result here")] = None,
    seed: Annotated[int, typer.Option(help="Random seed of the fleet")] = 7,
) -> None:
    """Replay the signal against a simulated fleet that hears it a few seconds late and ramps
    at most 10 kW/min per resource; print PJM's hourly scores and the safety checks."""
    from vpp_aggregator.demo.regulation import default_size, read_signal, replay

    if capacity_kw <= 0:
        raise typer.BadParameter("must be above 0 kW", param_hint="--capacity-kw")
    try:
        t, values, t0 = read_signal(signal)
    except (OSError, ValueError) as exc:
        raise typer.BadParameter(str(exc), param_hint="--signal") from None
    sizing = default_size(t, values, capacity_kw)
    n = fleet or sizing.resources
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task(f"replaying {len(t):,} values on {n} resources", total=1.0)
        result = replay(
            t,
            values,
            capacity_kw,
            n,
            seed=seed,
            start_hour=t0.hour + t0.minute / 60,
            progress=lambda done: bar.update(task, completed=done),
        )
    hours = [
        {
            "start": (t0 + timedelta(seconds=h.start_s)).isoformat(),
            "score": round(h.score, 4),
            "correlation": None if h.correlation is None else round(h.correlation, 4),
            "delay": None if h.delay is None else round(h.delay, 4),
            "precision": round(h.precision, 4),
        }
        for h in result.hours
    ]
    doc = {
        "hours": hours,
        "resources": n,
        "capacity_kw": capacity_kw,
        "safety_violations": result.safety_violations,
        "soc_violations": result.soc_violations,
        "departures_unmet": result.departures_unmet,
        "commands": result.commands,
        "sizing": {
            "resources": sizing.resources,
            "for_power": sizing.for_power,
            "for_ramp": sizing.for_ramp,
            "for_energy": sizing.for_energy,
            "signal_change_per_min_p99": round(sizing.ramp_rate_per_min, 4),
            "energy_one_way_kwh": round(sizing.energy_kwh, 1),
        },
    }
    table = Table(title=f"{signal.name}: {capacity_kw:g} kW on {n} resources")
    for col in ("hour", "score", "correlation", "delay", "precision"):
        table.add_column(col, justify="right")
    for h in hours:
        table.add_row(
            str(h["start"])[11:16],
            f"{h['score']:.3f}",
            "–" if h["correlation"] is None else f"{h['correlation']:.3f}",
            "–" if h["delay"] is None else f"{h['delay']:.3f}",
            f"{h['precision']:.3f}",
        )
    console.print(table)
    console.print(
        f"safety violations {result.safety_violations}, SoC outside limits "
        f"{result.soc_violations}, departures unmet {result.departures_unmet}, "
        f"commands {result.commands}"
    )
    if json_out:
        json_out.write_text(json.dumps(doc, indent=2))
