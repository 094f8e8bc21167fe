"""A site limit is met by all dispatches on the site together: what the others already use."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from vpp_aggregator.app.dispatch_records import OPEN_STATUSES, DispatchRecord
from vpp_aggregator.domain.dr_caps import scopes_overlap


def others_kw(
    records: Iterable[DispatchRecord],
    scope: Mapping[str, Any],
    discharge: bool,
    start: datetime,
    end: datetime,
    exclude: str | None,
) -> float:
    """The most power (kW, ≥ 0) that the other open dispatches in this direction, on resources
    this scope may share, plan at once during [start, end) (their plans, minute by minute)."""
    total = 0.0
    for r in records:
        if r.dispatch_id == exclude or r.status not in OPEN_STATUSES:
            continue
        if (r.target_kw > 0) != discharge or not scopes_overlap(scope, r.scope):
            continue
        first = max(0, int((start - r.start).total_seconds() // 60))
        last = int((end - r.start).total_seconds() // 60) + 1
        window = [abs(x) for x in r.plan_kw[first : max(first, last)]]
        total += max(window, default=0.0)
    return total
