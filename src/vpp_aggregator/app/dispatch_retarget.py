"""Changing what a dispatch asks while it runs, as a revision of the same dispatch: a new target
(same direction) and a new end. The rest of the window is re-planned from where each resource's
plan has it now, through the same planner and safety checker as any re-plan; resources no
longer needed ramp down. Demand-response events use it when an interval begins with another
figure, when an event is updated, and to extend an open-ended event."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from vpp_aggregator.app.dispatch_follow import DispatchFollowThrough
from vpp_aggregator.app.dispatch_ports import (
    MAX_DURATION_MIN,
    DispatchConflictError,
    DispatchNotFoundError,
    DispatchRejectedError,
)
from vpp_aggregator.app.dispatch_records import OPEN_STATUSES, DispatchRecord
from vpp_aggregator.app.reaction import PUBLISH, stage


class DispatchRetarget(DispatchFollowThrough):
    def retarget(
        self,
        dispatch_id: str,
        target_kw: float,
        end: datetime,
        reason: str,
        idempotency_key: str | None = None,
    ) -> DispatchRecord:
        """The dispatch, re-planned to `target_kw` until `end` (a revision with `reason`).
        `DispatchConflictError` when it is over or would change direction (a new dispatch is
        needed then); `DispatchRejectedError` for a target or end no dispatch may have."""
        now = self.clock()
        if not math.isfinite(target_kw) or target_kw == 0 or abs(target_kw) > self.max_target_kw:
            raise DispatchRejectedError([("target_kw", f"{target_kw:g} kW is no dispatch target")])
        with self._lock, self.store.planning_lock():
            record = self.store.get(dispatch_id)
            if record is None:
                raise DispatchNotFoundError(dispatch_id)
            if record.status not in OPEN_STATUSES or record.end_at <= now:
                raise DispatchConflictError(f"Dispatch {dispatch_id} is {record.status.value}.")
            if (target_kw > 0) != (record.target_kw > 0):
                raise DispatchConflictError(
                    f"Dispatch {dispatch_id} {'discharges' if record.target_kw > 0 else 'charges'};"
                    " a change of direction is a new dispatch."
                )
            o = self._open.get(dispatch_id)
            if o is None or o.record.revision != record.revision:
                taken = self.store.take_over(dispatch_id, self.owner, now + self.lease)
                if taken is not None:
                    self._track(taken)
                o = self._open.get(dispatch_id)
            if o is None:
                raise DispatchConflictError(f"Dispatch {dispatch_id} could not be taken over.")
            r = o.record
            minutes = math.ceil((end - r.start).total_seconds() / 60.0)
            # The rest of the window is at most the longest dispatch from now: an open-ended
            # event's dispatch is extended this way, a day at a time.
            if end <= now or end > max(now, r.start) + timedelta(minutes=MAX_DURATION_MIN):
                raise DispatchRejectedError(
                    [("end", f"{end.isoformat()} is not between now and {MAX_DURATION_MIN} min")]
                )
            r.target_kw = target_kw
            r.duration_minutes = minutes
            if idempotency_key is not None:
                r.idempotency_key = idempotency_key
            o.window_end_ts = r.start.timestamp() + minutes * 60.0
            self._replan_now(o, now, {}, reason)
        with stage(PUBLISH):
            self.publish_pending()
        return r

    def respect_limits(self) -> int:
        """Call periodically: re-plan each dispatch this process follows whose site limit (as it
        applies from now) is not the one it was planned with: a limit that begins, changes or
        ends. Returns how many were re-planned."""
        if self.power_limit is None:
            return 0
        now = self.clock()
        done = 0
        with self._lock:  # as the follow-through does: one change to a dispatch at a time
            for o in list(self._open.values()):
                r = o.record
                if r.end_at <= now or now.timestamp() >= o.window_end_ts:
                    continue
                begin = max(now, r.start)
                remaining = (o.window_end_ts - begin.timestamp()) / 60.0
                limit, _ = self.limit_at(
                    dict(r.scope), r.target_kw > 0, begin, remaining, r.dispatch_id
                )
                old = r.scope.get("capacity_limit_kw")
                if limit == old:
                    continue
                if _binds(limit, r.target_kw) or _binds(old, r.target_kw):
                    self._replan(o, now, {}, "capacity limit changed")
                    done += 1
                else:  # a limit above the target: nothing to re-plan, only to remember
                    r.scope["capacity_limit_kw"] = limit
        return done

    def follows_any(self) -> bool:
        """Whether this process follows any dispatch through."""
        with self._lock:
            return bool(self._open)

    def followed_here(self, source: str) -> list[DispatchRecord]:
        """The open dispatches of `source` this process follows (their revision as it has it)."""
        with self._lock:
            return [o.record for o in self._open.values() if o.record.source == source]

    def followed_record(self, dispatch_id: str) -> DispatchRecord | None:
        """The dispatch as this process follows it now; None when it does not (any more)."""
        with self._lock:
            o = self._open.get(dispatch_id)
            return o.record if o is not None else None


def _binds(limit: float | None, target_kw: float) -> bool:
    return limit is not None and limit < abs(target_kw) - 1e-6
