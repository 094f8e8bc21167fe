"""`make bench ONLY=replay`: real drivers through the whole market loop (`vpp-aggregator replay`),
what was delivered of what was sold, and how fast it replays. `VPP_REPLAY_RUNS` lists the
replays as `name:sessions:from:to:timezone[:quantile]` separated by `;` (paths relative to the
repository); by default two weeks of the Caltech garage at P10. `VPP_REPLAY_FLEET` is the
`--fleet` spec, `VPP_REPLAY_WARMUP_DAYS` the unscored days before each (28)."""

from __future__ import annotations

import json
import os
import time
from datetime import date
from pathlib import Path
from typing import Any

from vpp_aggregator.replay.fleet import FleetSpec
from vpp_aggregator.replay.runner import ReplaySpec, run

DATA = Path("../shared/data")
DEFAULT = (
    "caltech:../shared/data/acn_caltech/sessions_caltech.csv:2019-03-04:2019-03-18:"
    "America/Los_Angeles:p10"
)


def _runs() -> list[tuple[str, ReplaySpec]]:
    out = []
    for part in os.environ.get("VPP_REPLAY_RUNS", DEFAULT).split(";"):
        name, sessions, start, end, tz, *rest = part.split(":")
        weather = DATA / "weather_burbank_airport" / "weather_burbank_hourly.csv"
        spec = ReplaySpec(
            sessions=Path(sessions),
            start=date.fromisoformat(start),
            end=date.fromisoformat(end),
            data_dir=DATA,
            weather=weather if tz == "America/Los_Angeles" and weather.is_file() else None,
            fleet=FleetSpec.parse(os.environ.get("VPP_REPLAY_FLEET")),
            quantile=rest[0] if rest else "p10",
            timezone=tz,
            warmup_days=int(os.environ.get("VPP_REPLAY_WARMUP_DAYS", "28")),
        )
        spec.check()
        out.append((name, spec))
    return out


def run_replay(log: Any) -> list[str]:
    lines = [
        "### Replay: real drivers through forecast, offers, awards, dispatch and settlement "
        "(`vpp-aggregator replay`, simulated clock, SQLite, in-process)",
        "",
        "| data set | days | quantile | vehicles + batteries | offered kWh | awarded kWh "
        "| delivered kWh | delivered/awarded | intervals in full | departures met "
        "| safety violations | largest shortfall causes (kWh) | CPU s | CPU s per device-day |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    for name, spec in _runs():
        log(f"replay {name} {spec.start}..{spec.end} at {spec.quantile}")
        cpu0 = time.process_time()
        result = run(spec)
        cpu = time.process_time() - cpu0
        t = result["totals"]
        devices = result["fleet"]["vehicles"] + result["fleet"]["batteries"]
        days = (spec.end - spec.start).days + spec.warmup_days
        causes = sorted(t["shortfall_causes_kwh"].items(), key=lambda kv: -kv[1])
        top = ", ".join(f"{c} {k:,.1f}" for c, k in causes[:3] if k > 0) or "none"
        ratio = t["delivered_kwh"] / t["awarded_kwh"] if t["awarded_kwh"] else float("nan")
        full = t["intervals_delivered_in_full"] / max(1, t["intervals_awarded"])
        met = t["departures_met"] / max(1, t["departures"])
        lines.append(
            f"| {name} | {spec.start}..{spec.end} ({(spec.end - spec.start).days}, "
            f"+{spec.warmup_days} warm-up) | {spec.quantile} | "
            f"{result['fleet']['vehicles']} + {result['fleet']['batteries']} | "
            f"{t['offered_kwh']:,.1f} | {t['awarded_kwh']:,.1f} | {t['delivered_kwh']:,.1f} | "
            f"{ratio:.1%} | {t['intervals_delivered_in_full']:,} of {t['intervals_awarded']:,} "
            f"({full:.1%}) | {t['departures_met']:,} of {t['departures']:,} ({met:.1%}) | "
            f"{t['safety_violations']} | {top} | {cpu:,.0f} | {cpu / (devices * days):.3f} |"
        )
        Path(f"/tmp/replay-{name}-{spec.quantile}.json").write_text(json.dumps(result))
    lines += [
        "",
        "Every figure of each run is written to `/tmp/replay-<name>-<quantile>.json`. The "
        "vehicles are the file's regular drivers (at least a stay every two weeks); the "
        "batteries 4 x 500 kWh. CPU seconds cover the warm-up days too.",
        "",
    ]
    return lines
