"""Back-to-back awards of one aggregation served by one dispatch: each award that begins where
the last one ends extends its dispatch, which takes each award's kW as the award begins."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from vpp_aggregator.app.award_tracking import AwardTracking
from vpp_aggregator.app.dispatch import (
    DispatchConflictError,
    DispatchNotFoundError,
    DispatchRejectedError,
    DispatchService,
)
from vpp_aggregator.app.dispatch_records import DispatchRecord
from vpp_aggregator.app.messages import MarketAward

log = logging.getLogger(__name__)


class AwardsRunning(Protocol):
    def dispatched_awards(
        self, start: datetime, end: datetime, aggregation_id: str | None = None
    ) -> list[dict[str, Any]]: ...


class BackToBack:
    def __init__(
        self,
        repo: AwardsRunning,
        dispatch: DispatchService,
        clock: Callable[[], datetime],
        tracking: AwardTracking | None = None,
    ) -> None:
        self.repo = repo
        self.dispatch = dispatch
        self.clock = clock
        self.tracking = tracking

    def follow_on(self, a: MarketAward) -> DispatchRecord | None:
        """The dispatch of this aggregation's award that ends where this one begins, in the same
        direction, extended to this award's end; None when there is none or it cannot be.

        Separate dispatches would each find the resources held by the other's ramp-down (the
        first is only over when its ramp-down is) and be refused; `follow` gives the dispatch
        each award's kW as the award begins."""
        near = self.repo.dispatched_awards(
            a.interval_start - timedelta(seconds=1), a.interval_start, a.aggregation_id
        )
        for prev in near:
            same_way = (prev["awarded_kw"] > 0) == (a.awarded_kw > 0)
            if prev["interval_end"] != a.interval_start or not same_way:
                continue
            try:
                record, _, _ = self.dispatch.get(prev["dispatch_id"])
            except DispatchNotFoundError:
                continue
            if record.start + timedelta(minutes=record.duration_minutes) != a.interval_start:
                continue
            try:
                return self.dispatch.retarget(
                    record.dispatch_id,
                    record.target_kw,
                    a.interval_end,
                    f"award {a.award_id} follows on",
                )
            except (DispatchConflictError, DispatchRejectedError) as exc:
                log.info("award %s: a dispatch of its own (%s)", a.award_id, exc)
        return None

    def follow(self) -> int:
        """Call every dispatch tick: a dispatch serving awards takes each award's kW as the
        award's interval begins (at most one tick late), raised while the award runs by what
        the aggregation's other members draw beyond its baseline (`app/award_tracking`).
        Returns how many changed."""
        if not self.dispatch.follows_any():  # only dispatches followed here are changed here
            return 0
        now = self.clock()
        running: list[tuple[dict[str, Any], DispatchRecord]] = []
        for award in self.repo.dispatched_awards(now, now):
            if not award["interval_start"] <= now < award["interval_end"]:
                continue
            record = self.dispatch.followed_record(award["dispatch_id"])
            if record is not None:
                running.append((award, record))
        wanted = (
            self.tracking.targets(
                [(a, [x.resource_id for x in r.allocations]) for a, r in running], now
            )
            if self.tracking is not None and running
            else {}
        )
        changed = 0
        for award, record in running:
            awarded = float(award["awarded_kw"])
            kw = wanted.get(award["award_id"], awarded)
            if abs(kw - awarded) < 1e-6:
                if abs(record.target_kw - awarded) < 1e-6:
                    continue
                reason = f"award {award['award_id']}: its {awarded:g} kW"
            elif AwardTracking.worth_changing(record.target_kw, kw, awarded):
                reason = (
                    f"award {award['award_id']}: {kw:.1f} kW, so the meter shows its "
                    f"{awarded:g} kW over what other members draw beyond the baseline"
                )
            else:
                continue
            end = record.start + timedelta(minutes=record.duration_minutes)
            try:
                self.dispatch.retarget(record.dispatch_id, round(kw, 3), end, reason)
                changed += 1
            except (DispatchConflictError, DispatchRejectedError, DispatchNotFoundError) as exc:
                log.warning("award %s: its kW not taken up: %s", award["award_id"], exc)
        return changed
