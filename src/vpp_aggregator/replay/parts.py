"""A long replay in consecutive parts replayed at once, one process each (`--jobs`).

A replay is one process's work: the service, its store and the simulated clock run in line.
A year on a machine of several cores is faster as parts, each the same fleet (drawn over the
whole period) replayed from its own warm-up, the days before it, as a whole replay starts from
its own. What a part cannot carry over from the one before are the batteries' state of charge
(they start where the fleet's first day has them) and the forecaster's history beyond its
warm-up (the service trains on the raw history it keeps, 35 days by default, so four weeks of
warm-up leave it nearly as it would be). The parts' figures are joined day by day."""

from __future__ import annotations

import itertools
import multiprocessing
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

from vpp_aggregator.replay import runner

_done: Any = None  # in a part's process: the shared share of each part done


def periods(start: date, end: date, jobs: int) -> list[tuple[date, date]]:
    """[start, end) cut into at most `jobs` consecutive periods of whole days, as even as can be."""
    days = (end - start).days
    n = max(1, min(jobs, days))
    cuts = [start + timedelta(days=round(k * days / n)) for k in range(n + 1)]
    return list(itertools.pairwise(cuts))


def run(
    spec: runner.ReplaySpec, jobs: int, progress: Callable[[float], None] | None = None
) -> dict[str, Any]:
    """The replay of `spec`, in `jobs` parts at once (one continuous replay when 1)."""
    spans = periods(spec.start, spec.end, jobs)
    if len(spans) == 1:
        return runner.run(spec, progress)
    drawn = spec.fleet_days or (spec.start, spec.end)  # every part replays the same vehicles
    parts = [replace(spec, start=a, end=b, fleet_days=drawn) for a, b in spans]
    # A fresh interpreter per part: the parent's threads (the progress bar's) are not forked.
    context = multiprocessing.get_context("spawn")
    done = context.Array("d", len(parts), lock=False)
    # Stopped with SIGTERM (kill, a service manager), the parent must stop its parts too: by
    # default it would die at once and leave them replaying on their own. The parts keep their
    # stores in a directory the parent owns and removes, so a part may die at once when stopped
    # (one left to clean up after itself can hang on its service's threads at exit).
    main = threading.current_thread() is threading.main_thread()
    before = signal.signal(signal.SIGTERM, _stop) if main else None
    root = tempfile.mkdtemp(prefix="vpp-replay-parts-")
    pool = None
    try:
        pool = context.Pool(len(parts), initializer=_share, initargs=(done, root))
        results = [pool.apply_async(_part, (part, k)) for k, part in enumerate(parts)]
        while not all(r.ready() for r in results):
            results[[r.ready() for r in results].index(False)].wait(1.0)
            if progress is not None:
                progress(sum(done) / len(parts))
            for r in results:
                if r.ready() and not r.successful():
                    r.get()  # a part failed: its error is the replay's; the others stop
        report = joined([r.get() for r in results])
        pool.close()
    except BaseException:  # a part failed, or the operator stopped the replay: stop every part
        if pool is not None:
            pool.terminate()
        raise
    finally:
        if pool is not None:
            pool.join()
        shutil.rmtree(root, ignore_errors=True)
        if main:
            signal.signal(signal.SIGTERM, before)
    report["parts"] = [{"from": a.isoformat(), "to": b.isoformat()} for a, b in spans]
    return report


def _stop(_sig: int, _frame: Any) -> None:
    raise SystemExit(143)  # as a shell reports a process ended by SIGTERM


def _share(done: Any, root: str) -> None:
    global _done
    _done = done
    tempfile.tempdir = root  # the part's store goes where the parent removes it


def _part(spec: runner.ReplaySpec, k: int) -> dict[str, Any]:
    def progress(share: float) -> None:
        _done[k] = share

    return runner.run(spec, progress)


def joined(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """The reports of consecutive parts as one: days and intervals in order, totals added."""
    first = reports[0]
    totals: dict[str, Any] = {}
    for report in reports:
        for key, value in report["totals"].items():
            if isinstance(value, dict):
                into = totals.setdefault(key, {})
                for cause, kwh in value.items():
                    into[cause] = into.get(cause, 0) + kwh
            else:
                totals[key] = totals.get(key, 0) + value
    return {
        **first,
        "totals": {
            k: {c: round(x, 3) for c, x in v.items()} if isinstance(v, dict) else _round(v)
            for k, v in totals.items()
        },
        "days": [d for r in reports for d in r["days"]],
        "intervals": [i for r in reports for i in r["intervals"]],
        "safety_violations": [v for r in reports for v in r["safety_violations"]][:100],
        "notes": [n for r in reports for n in r["notes"]][:200],
        "gap_days_left_out": sorted({d for r in reports for d in r["gap_days_left_out"]}),
    }


def _round(value: int | float) -> int | float:
    return value if isinstance(value, int) else round(value, 3)
