"""Following a dispatch through: claim it (one process per dispatch), move its status with time,
watch every allocated resource, and re-plan the rest of the window when one drops out, breaks a
rule it was planned under, or refuses its command; each re-plan is a recorded revision."""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np

from vpp_aggregator.app.dispatch_core import OpenDispatch
from vpp_aggregator.app.dispatch_records import (
    OPEN_STATUSES,
    PLANNED_AHEAD,
    AllocationRecord,
    DispatchRecord,
    DispatchStatus,
    NotFollowedHereError,
    PlanningBusyError,
    device_commands,
)
from vpp_aggregator.app.dispatch_release import DispatchReleases
from vpp_aggregator.app.events import DispatchEnded
from vpp_aggregator.app.reaction import OUTBOX, PUBLISH, stage
from vpp_aggregator.domain.capacity import Unavailable
from vpp_aggregator.domain.dispatch.outcome import Outcome
from vpp_aggregator.domain.dispatch.problem import (
    STEP_MIN,
    DispatchProblem,
)
from vpp_aggregator.domain.dispatch.safety import check_rows

log = logging.getLogger(__name__)


class DispatchFollowThrough(DispatchReleases):
    def resume(self) -> int:
        """After a restart: follow the running dispatches that no live process follows (their
        claim lapsed, or was let go on a clean stop), and flush the outbox."""
        self._adopt(self.clock())
        self.publish_pending()
        return len(self._open)

    def _adopt(self, now: datetime) -> None:
        """Renew the claim on what this process follows; take over what nobody follows."""
        last = self._renewed_at
        if last is not None and last <= now < last + self.lease / 3:
            return
        with self._lock:
            self._renewed_at = now
            kept, claimed = self.store.adopt(self.owner, list(self._open), now, now + self.lease)
            for did in [d for d in self._open if d not in kept]:
                log.warning("dispatch %s is followed by another process now", did)
                del self._open[did]
            for record in claimed:
                if record.dispatch_id not in self._open:
                    self._track(record)

    def release(self) -> None:
        """On a clean stop: let another process take over the dispatches this one follows."""
        with self._lock:
            self.store.release(self.owner, self.clock())
            self._open.clear()

    def tick(self) -> None:
        """Move statuses with time, re-plan dispatches whose resources dropped out, schedule recharges."""
        now = self.clock()
        now_ts = now.timestamp()
        finished: list[tuple[DispatchRecord, dict[str, float]]] = []
        self._adopt(now)
        self._handle_queued_refusals(now)
        with self._lock:
            followed = list(self._open)
        for did in followed:
            # One dispatch at a time under the lock: a new dispatch (a grid event's) waits for
            # the one being followed, not for the whole book.
            with self._lock:
                o = self._open.get(did)  # as it is now: it may have changed meanwhile
                if o is None:
                    continue  # ended or cancelled meanwhile
                r = o.record
                if now_ts >= r.end_at.timestamp():
                    self._set_status(r, DispatchStatus.COMPLETED, now)
                    del self._open[did]
                    finished.append((r, self._drawn(o, now)))
                    continue
                planned_at = r.updated_at
                if r.status is DispatchStatus.SCHEDULED and now_ts >= r.start.timestamp():
                    self._set_status(r, DispatchStatus.ACTIVE, now)
                if now_ts >= r.start.timestamp() and planned_at < r.start - PLANNED_AHEAD:
                    # Planned long before (a day-ahead award; short of its target then or not):
                    # from the fleet as it is now, not as it was then, rather than dropping every
                    # resource that moved. Once: the new plan is dated after the start.
                    self._replan(o, now, {}, "starts: re-planned from the fleet as it is now")
                    continue
                if r.start.timestamp() <= now_ts < o.window_end_ts:
                    try:
                        self._follow(o, now)
                        self._ask_again(did, now)
                    except Exception:  # one dispatch's trouble must not stop the others
                        log.exception("following dispatch %s failed; next tick tries again", did)
        with self._lock:
            self.refusals.keep_only(set(self._open))
        for r, drawn in finished:
            self.events.publish(DispatchEnded(r, now, drawn))

    def command_rejected(self, dispatch_id: str, resource_id: str, reason: str) -> str:
        """A device refused its command: re-plan without it. Returns "replanned"; "queued" when
        another process follows that dispatch (it re-plans on its next tick); "ignored" when the
        dispatch is over or the resource has no part left in it."""
        now = self.clock()
        with self._lock:
            o = self._open.get(dispatch_id)
            if o is None:
                record = self.store.get(dispatch_id)
                if record is None or record.status not in OPEN_STATUSES or record.end_at <= now:
                    return "ignored"
                if resource_id not in {a.resource_id for a in record.allocations}:
                    return "ignored"
                self.store.add_refusal(dispatch_id, resource_id, reason, now)
                return "queued"
            if not self._refused(o, resource_id, reason, now):
                return "ignored"
        self.publish_pending()
        return "replanned"

    def _refused(self, o: OpenDispatch, resource_id: str, reason: str, now: datetime) -> bool:
        if resource_id not in o.ids or o.released[o.ids.index(resource_id)]:
            return False
        self.refusals.record(o.record.dispatch_id, resource_id, now.timestamp())
        self._replan(o, now, {resource_id: f"command_rejected ({reason})"})
        return True

    def _ask_again(self, dispatch_id: str, now: datetime) -> None:
        """Plan again with the resources whose refusal is old enough (`dispatch_refusals`)."""
        o = self._open.get(dispatch_id)  # as the tick left it: it may have been re-planned
        if o is None:
            return
        due = self.refusals.take_due(dispatch_id, now.timestamp())
        if due:
            self._replan(o, now, {}, f"asked again after refusing: {', '.join(sorted(due))}")

    def _handle_queued_refusals(self, now: datetime) -> None:
        """Refusals another process received for dispatches followed here (`command_rejected`:
        this process's own are handled as they come)."""
        last = self._refusals_read
        if last is not None and last <= now < last + self.peer_poll:
            return
        self._refusals_read = now
        with self._lock:
            for did, rid, reason in self.store.take_refusals(list(self._open), now):
                o = self._open.get(did)
                if o is not None:
                    self._refused(o, rid, reason, now)

    def _follow(self, o: OpenDispatch, now: datetime) -> None:
        point = (now.timestamp() - o.start_ts) / 60.0
        i = min(int(point), o.kw.shape[1] - 1)
        dropped: dict[str, str] = {}
        reported: dict[int, tuple[float, float]] = {}  # row -> SoC reported, when sampled
        # Resources whose part is not done and which are not already being released.
        busy = np.flatnonzero((o.kw[:, i:] != 0).any(axis=1) & ~np.asarray(o.released, bool))
        ids = [o.ids[j] for j in busy.tolist()]
        for j, rid, live in zip(
            busy.tolist(), ids, self.state.live_many(ids, now, 1.0), strict=True
        ):
            if live is not None and live.soc_pct is not None and live.telemetry_at is not None:
                reported[j] = (live.soc_pct, live.telemetry_at.timestamp())
            if live is None:
                dropped[rid] = "deactivated"
            elif live.availability_reason in (
                Unavailable.UNPLUGGED,
                Unavailable.STALE_TELEMETRY,
                Unavailable.SUSPENDED,
                Unavailable.NO_TELEMETRY,
            ):
                dropped[rid] = live.availability_reason
            elif o.record.target_kw > 0 and live.discharge_locked:
                dropped[rid] = "safety_lockout"
            elif live.soc_pct is not None and abs(live.soc_pct - o.soc[j, i]) > self.soc_tolerance:
                dropped[rid] = f"soc_off_plan ({live.soc_pct:.1f} % vs {o.soc[j, i]:.1f} % planned)"
        followed = [j for j, rid in zip(busy.tolist(), ids, strict=True) if rid not in dropped]
        dropped.update(self._broken_rules(o, i, followed, reported))
        if dropped:
            self._replan(o, now, dropped)

    def _broken_rules(
        self,
        o: OpenDispatch,
        i: int,
        rows: list[int],
        reported: dict[int, tuple[float, float]] | None = None,
    ) -> dict[str, str]:
        """Resources whose plan from point `i` on breaks a rule as the rule stands now: a tighter
        minimum SoC, a new trip or departure, lower power limits or capacity, a status. The one
        check through which every rule change reaches a running dispatch, by the same
        independent checker every new schedule passes. The plan is checked from its own SoC
        at `i`, moved by how far the `reported` SoC has drifted from the plan (at the time it
        was sampled) where that drift is toward a limit: a battery that drifted below its plan
        by less than the SoC tolerance would otherwise follow a plan ending at its floor across
        it, and be released only when too late to ramp down above."""
        if not rows:
            return {}
        at = datetime.fromtimestamp(o.start_ts + i * STEP_MIN * 60.0, tz=UTC)
        direction = 1 if o.record.target_kw > 0 else -1
        inputs, _ = self.state.dispatch_inputs(
            at, at, direction=direction, resource_ids=[o.ids[j] for j in rows]
        )
        if not inputs.resource_ids:
            return {}
        index = {rid: j for j, rid in enumerate(o.ids)}
        sel = [index[rid] for rid in inputs.resource_ids]
        setpoints = o.kw[sel, i:]
        soc = o.soc[sel, i].copy()
        grid = np.arange(o.soc.shape[1])
        for k, j in enumerate(sel):
            if reported and j in reported:
                told, at_ts = reported[j]
                planned = float(np.interp((at_ts - o.start_ts) / 60.0, grid, o.soc[j]))
                soc[k] -= direction * max(0.0, direction * (planned - told))
        inputs = replace(inputs, soc_pct=soc, power_kw=setpoints[:, 0].copy())
        problem = DispatchProblem(
            inputs, o.record.target_kw, setpoints.shape[1] - 1, self.ramp, self.rte
        )
        broken: dict[str, str] = {}
        for v in check_rows(problem, np.arange(len(sel)), setpoints, self.ramp):
            broken.setdefault(v.resource_id, f"rules_changed ({v.rule}: {v.detail})")
        return broken

    def resources_changed(self, resource_ids: list[str]) -> None:
        """A registry change (PATCH, suspend, delete, lockout...): the open dispatches holding
        any of these resources are checked against the rules as they now stand, at once."""
        changed = set(resource_ids)
        now = self.clock()
        with self._lock:
            for did, o in list(self._open.items()):
                if changed.isdisjoint(o.ids):
                    continue
                if o.record.start.timestamp() <= now.timestamp() < o.window_end_ts:
                    try:
                        self._follow(o, now)
                    except Exception:
                        log.exception("re-checking dispatch %s after a change failed", did)

    def _replan(
        self, o: OpenDispatch, now: datetime, dropped: dict[str, str], reason: str = "redispatch"
    ) -> None:
        did = o.record.dispatch_id
        try:
            with self.store.planning_lock():
                self._replan_now(o, now, dropped, reason)
        except NotFollowedHereError:
            log.warning("dispatch %s is followed by another process now; let go here", did)
            self._open.pop(did, None)
        except PlanningBusyError as exc:
            log.warning("re-plan of %s waits for the next tick: %s", did, exc)
        with stage(PUBLISH):
            self.publish_pending()

    def _replan_now(
        self, o: OpenDispatch, now: datetime, dropped: dict[str, str], reason: str = "redispatch"
    ) -> None:
        """Re-plan the rest of the window (all of it when it has not begun) without the dropped
        resources, to the record's target; the others keep ramping from where their plan has
        them now."""
        r = o.record
        now_ts = now.timestamp()
        begin = max(now, r.start)  # a scheduled dispatch is re-planned from its start
        point = max(0.0, (now.timestamp() - o.start_ts) / 60.0)
        current = {
            rid: float(np.interp(point, np.arange(o.kw.shape[1]), o.kw[j]))
            if now >= r.start
            else 0.0
            for j, rid in enumerate(o.ids)
        }
        remaining = math.floor((o.window_end_ts - begin.timestamp()) / 60.0)
        others_busy = self.busy_everywhere(begin, r.end_at, exclude=r.dispatch_id)
        allocations: list[AllocationRecord] = []
        outcome: Outcome | None = None
        if remaining >= 1:
            scope = dict(r.scope)
            keep = {k: v for k, v in current.items() if k not in dropped}
            problem, _, outcome = self._plan(
                r.target_kw,
                remaining,
                now,
                begin,
                scope,
                busy=[*others_busy, *dropped, *self.refusals.left_out(r.dispatch_id, now_ts)],
                power_override=keep,
                charge_ceiling_pct=scope.get("charge_ceiling_pct"),
                exclude=r.dispatch_id,
                discharge_floor_pct=scope.get("discharge_floor_pct"),
            )
            allocations = self._allocations(problem, outcome, begin)
            r.scope = scope  # with the site limit this plan kept to
        # Dropped resources (and any no longer used) ramp down from their planned power.
        used = {a.resource_id for a in allocations}
        for rid, kw in current.items():
            if rid not in used and abs(kw) > 1e-9:
                allocations.append(self._ramp_down(rid, kw, now, o, dropped.get(rid, "not needed")))
        r.revision += 1
        r.allocations = allocations
        r.updated_at = now
        if outcome is not None:
            r.allocated_kw = round(outcome.allocated_kw, 3)
            r.shortfall_kw = round(outcome.shortfall_kw, 3)
            r.shortfall_reasons = [{"rule": x.rule, "detail": x.detail} for x in outcome.reasons]
            offset = round((begin.timestamp() - r.start.timestamp()) / 60.0)
            r.plan_kw = r.plan_kw[:offset] + [round(float(x), 3) for x in outcome.fleet_kw]
            if r.status is DispatchStatus.ACTIVE and outcome.shortfall_kw != 0:
                r.status = DispatchStatus.PARTIAL
            elif r.status is DispatchStatus.PARTIAL and outcome.shortfall_kw == 0:
                # a lower target (or a longer window) the fleet can meet; not begun: scheduled
                r.status = DispatchStatus.ACTIVE if now >= r.start else DispatchStatus.SCHEDULED
        last = max(
            (a.schedule_start + timedelta(minutes=len(a.schedule_kw) - 1) for a in allocations),
            default=now,
        )
        r.end_at = max(last, now)
        commands = device_commands(r, now)
        detail = {"dropped": dropped, "resources": len(allocations), "target_kw": r.target_kw}
        with stage(OUTBOX):
            self.store.revise(r, reason, detail, commands, now, owner=self.owner)
        log.info("dispatch %s re-planned (revision %d): %s", r.dispatch_id, r.revision, dropped)
        drawn = o.drawn_by(now.timestamp())
        self._track(r)
        if r.dispatch_id in self._open:
            self._open[r.dispatch_id].drawn_pct = drawn
