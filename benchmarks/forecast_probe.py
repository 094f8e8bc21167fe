"""Peak memory and CPU time of one whole-fleet forecast in one process: a fleet of `n` synthetic
resources with `days` of hourly plug-in history folded in, then the forecast the hourly accuracy
tracker makes (`_forecast(24, 60, None)`), and optionally a 72 h forecast at 15 minutes, with and
without a stored model. Peak RSS is the process's high-water mark reset just before each call
(`/proc/self/clear_refs`), so the figure is the call's own extra memory.

    python -m benchmarks.forecast_probe 1000000 [--days 28] [--every 4] [--model] [--wide] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def _measured(call: Any) -> tuple[Any, dict[str, float]]:
    """The call's result, CPU seconds and peak RSS above what the process held before it."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")  # reset the high-water mark to the current RSS
    rss0 = _status_kb("VmRSS")
    cpu0 = time.process_time()
    out = call()
    cpu = time.process_time() - cpu0
    return out, {"cpu_s": cpu, "peak_extra_mb": (_status_kb("VmHWM") - rss0) / 1024}


def probe(
    n: int, days: int = 28, model: bool = False, wide: bool = False, every: int = 1
) -> dict[str, Any]:
    """`every`: each hour one resource in `every` reports (in turn), so a million resources'
    month of history folds in quicker; every hour still has data, as the forecast reads it."""
    from benchmarks.suite import DEMO_SESSIONS, reporting_fleet
    from vpp_aggregator.adapters.store.database import make_engine, migrate
    from vpp_aggregator.adapters.store.repository import Repository
    from vpp_aggregator.app.forecast_service import ForecastService
    from vpp_aggregator.config import Settings

    now = datetime(2026, 11, 25, 14, 0, tzinfo=UTC)
    state, ids, rng = reporting_fleet(n, now)
    out: dict[str, Any] = {"resources": n, "days": days, "every": every}
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/f.db")
        migrate(engine)
        models = Path(tmp) / "models"
        service = ForecastService(
            state,
            Repository(engine),
            lambda: now,
            max_horizon_hours=72,
            timezone="America/Los_Angeles",
            hold_s=Settings().telemetry_stale_seconds,
            history_days=days,
            model_dir=models,
        )
        service.history_ready.set()
        home = rng.integers(16, 20, n)  # hour (UTC offset ignored) each vehicle comes home
        turns = [ids[k::every] for k in range(every)]
        a = time.process_time()
        for h in range(days * 24, 0, -1):
            t = now.timestamp() - h * 3600.0
            hour = int(t // 3600) % 24
            k = h % every
            m = len(turns[k])
            plugged = ((hour >= home[k::every]) | (hour < 7)) & (rng.random(m) < 0.9)
            service.record(turns[k], np.full(m, t), plugged, rng.uniform(30, 90, m))
        out["fold_cpu_s"] = time.process_time() - a
        out["rss_before_mb"] = _status_kb("VmRSS") / 1024
        calls = {"fleet_24h_60min": (24, 60)}
        if wide:
            calls["fleet_72h_15min"] = (72, 15)
        if model:
            from vpp_aggregator.adapters.data.forecasting import train

            runs = [("fallback", False), ("model", True)]
        else:
            runs = [("fallback", False)]
        for label, with_model in runs:
            if with_model:
                train(DEMO_SESSIONS, None, "America/Los_Angeles", models)
            for name, (hours, minutes) in calls.items():
                doc, figures = _measured(lambda h=hours, m=minutes: service._forecast(h, m, None))
                assert doc[0]["model"]["fallback"] is not with_model, doc[0]["model"]
                out[f"{name}_{label}"] = figures
                mid = doc[0]["intervals"][len(doc[0]["intervals"]) // 2]
                out[f"{name}_{label}_mid_interval"] = mid
                out[f"{name}_{label}_intervals"] = doc[0]["intervals"]  # to compare versions
        engine.dispose()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("n", type=int, nargs="?", default=100_000)
    parser.add_argument("--days", type=int, default=28)
    parser.add_argument("--model", action="store_true")
    parser.add_argument("--wide", action="store_true", help="also a 72 h forecast at 15 minutes")
    parser.add_argument(
        "--every", type=int, default=1, help="one resource in EVERY reports an hour"
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = probe(args.n, args.days, args.model, args.wide, args.every)
    print(json.dumps(result, indent=None if args.json else 1))
