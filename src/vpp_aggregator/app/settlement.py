"""Measurement and verification of an award: per 5-minute settlement interval, the
aggregation's baseline, its measured net consumption and the difference, delivered.

The aggregation is the grid node's resources as registered. Vehicles are load: baselined by
the aggregation's method (`domain/baselines`), on their own and summed. Batteries are metered
output: their baseline is zero, so they deliver what they inject. Delivered = baseline −
measured net consumption, so a vehicle that stops charging delivers what it no longer draws,
one that exports delivers that too, and a charge-side award (negative kW) is met by drawing
more than the baseline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, time, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.app.outbound import SettledInterval, SettledResource
from vpp_aggregator.domain.baselines import (
    DEFAULT_RULES,
    Adjustment,
    Baseline,
    BaselineMethod,
    BaselineRule,
    DayLoads,
    baseline,
)
from vpp_aggregator.domain.metering import energy_in

SLOT_S = 300  # settlement intervals: the 5-minute real-time interval
SLOTS_PER_DAY = 86_400 // SLOT_S
KW_PER_KWH = 3600.0 / SLOT_S  # mean kW over one interval of 1 kWh


class MeasurementStore(Protocol):
    def power_history(
        self, resource_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]]: ...
    def award_starts(
        self, aggregation_id: str, start: datetime, end: datetime
    ) -> list[datetime]: ...


class Members(Protocol):
    def members(self, grid_node: str) -> list[tuple[str, bool]]: ...


@dataclass(frozen=True, slots=True)
class BaselinePolicy:
    """Which method settles each aggregation, and each method's parameters."""

    default: BaselineMethod = BaselineMethod.METERED
    by_aggregation: Mapping[str, BaselineMethod] = field(default_factory=dict)
    rules: Mapping[BaselineMethod, BaselineRule] = field(default_factory=lambda: DEFAULT_RULES)

    def rule_for(self, aggregation_id: str) -> BaselineRule:
        return self.rules[self.by_aggregation.get(aggregation_id, self.default)]

    @classmethod
    def parse(
        cls, default: str, methods: str, parameters: Mapping[str, Mapping[str, object]]
    ) -> BaselinePolicy:
        """From configuration: `VPP_BASELINE_DEFAULT` (a method), `VPP_BASELINE_METHODS`
        (`"NODE_A=caiso_10in10,NODE_B=pjm_cbl"`) and `VPP_BASELINE_PARAMETERS` (JSON: per method,
        the `BaselineRule` fields to change, e.g. `{"caiso_10in10": {"adjustment_cap": 0.4}}`).
        A ValueError names what cannot be read."""
        names = ", ".join(m.value for m in BaselineMethod)

        def method(text: str) -> BaselineMethod:
            try:
                return BaselineMethod(text.strip())
            except ValueError:
                raise ValueError(f"unknown baseline method {text!r}; one of {names}") from None

        by: dict[str, BaselineMethod] = {}
        for part in filter(None, (p.strip() for p in methods.split(","))):
            node, sep, name = part.partition("=")
            if not sep or not node.strip():
                raise ValueError(f"{part!r}: expected GRID_NODE=method, e.g. NODE_A=pjm_cbl")
            by[node.strip()] = method(name)
        rules = dict(DEFAULT_RULES)
        for name, changes in parameters.items():
            m = method(name)
            known = {f.name for f in fields(BaselineRule)} - {"method"}
            kwargs: dict[str, Any] = {}
            for key, value in changes.items():
                if key not in known:
                    raise ValueError(f"{name}: {key!r} is not a baseline parameter")
                kwargs[key] = _parameter(name, key, getattr(rules[m], key), value)
            rules[m] = replace(rules[m], **kwargs)
            _check(rules[m])
        return cls(method(default), by, rules)


def _parameter(method: str, key: str, default: object, value: object) -> object:
    """A configured parameter, of the type its default has (None where None is allowed)."""
    if key == "adjustment":
        try:
            return Adjustment(str(value))
        except ValueError:
            raise ValueError(f"{method}.adjustment: ratio or additive, not {value!r}") from None
    optional = key in ("low_usage_share", "adjustment_cap")
    if value is None and optional:
        return None
    kind = bool if isinstance(default, bool) else type(default) if default is not None else float
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        ok, value = True, float(value)
    if not ok:
        raise ValueError(f"{method}.{key}: expected {kind.__name__}, not {value!r}")
    return value


def _check(rule: BaselineRule) -> None:
    name = rule.method.value
    try:
        ZoneInfo(rule.timezone)
    except (ValueError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"{name}.timezone: no time zone {rule.timezone!r}") from None
    if rule.lookback_days < 1:
        raise ValueError(f"{name}.lookback_days must be at least 1")
    for days, keep, least in (
        (rule.weekday_days, rule.weekday_keep, rule.weekday_min_days),
        (rule.weekend_days, rule.weekend_keep, rule.weekend_min_days),
    ):
        if not 1 <= keep <= days or not 1 <= least <= days:
            raise ValueError(f"{name}: days kept and needed must be 1 to the days looked at")
    if not rule.adjustment_from_h > rule.adjustment_to_h >= 0:
        raise ValueError(f"{name}: adjustment_from_h must be more than adjustment_to_h (≥ 0)")


@dataclass(frozen=True, slots=True)
class Measured:
    method: str
    baseline_kwh: float
    measured_kwh: float
    delivered_kwh: float
    days_used: list[str]
    adjustment: float | None
    note: str | None
    intervals: list[SettledInterval]
    resources: list[SettledResource]


def _round(x: float) -> float:
    return round(float(x), 4)


class Meter:
    def __init__(
        self, store: MeasurementStore, members: Members, policy: BaselinePolicy, hold_s: float
    ) -> None:
        self.store = store
        self.members = members
        self.policy = policy
        self.hold_s = hold_s

    def measure(
        self, aggregation_id: str, start: datetime, end: datetime, awarded_kw: float
    ) -> Measured:
        rule = self.policy.rule_for(aggregation_id)
        tz = ZoneInfo(rule.timezone)
        day = start.astimezone(tz).date()
        metered = rule.method is BaselineMethod.METERED
        days = [
            day - timedelta(days=back)
            for back in range(0 if metered else rule.lookback_days, -1, -1)
        ]
        midnights = np.array([datetime.combine(d, time(), tz).timestamp() for d in days])
        starts = midnights[:, None] + SLOT_S * np.arange(SLOTS_PER_DAY, dtype=np.float64)
        members = self.members.members(aggregation_id)
        history = self.store.power_history(
            [r for r, _ in members],
            datetime.fromtimestamp(midnights[0] - self.hold_s, start.tzinfo),
            end,
        )
        net_kw: dict[str, NDArray[np.float64]] = {}  # per resource: (days, slots) consumption
        known: dict[str, NDArray[np.bool_]] = {}
        for rid, _ in members:
            ts, kw = history.get(rid, (np.zeros(0), np.zeros(0)))
            kwh, covered = energy_in(ts, kw, starts, starts + SLOT_S, self.hold_s)
            net_kw[rid] = -kwh * KW_PER_KWH
            known[rid] = covered.sum(axis=1) > 0
        s0 = int((start.timestamp() - midnights[-1]) // SLOT_S)
        s1 = min(SLOTS_PER_DAY, int(np.ceil((end.timestamp() - midnights[-1]) / SLOT_S)))
        window = slice(s0, s1)
        event_days = {
            a.astimezone(tz).date()
            for a in self.store.award_starts(
                aggregation_id, datetime.fromtimestamp(midnights[0], tz), start
            )
        } - {day}

        def baseline_of(rows: list[str]) -> Baseline:
            if metered or not rows:
                return Baseline(np.zeros(SLOTS_PER_DAY), adjustment=None)
            kw = np.sum([net_kw[r] for r in rows], axis=0)
            seen = np.any([known[r] for r in rows], axis=0)
            seen[-1] = True
            loads = DayLoads(tuple(d for d, s in zip(days, seen, strict=True) if s), kw[seen])
            return baseline(loads, day, window, rule, event_days, slot_minutes=SLOT_S // 60)

        vehicles = [r for r, bess in members if not bess]
        whole = baseline_of(vehicles)
        note = whole.note
        base_kw = whole.kw
        if base_kw is None:
            base_kw = np.zeros(SLOTS_PER_DAY)
            note = f"{note}; delivery counted as metered output only (baseline 0)"
        measured_kw = (
            np.sum([net_kw[r][-1] for r, _ in members], axis=0)
            if members
            else np.zeros(SLOTS_PER_DAY)
        )
        intervals: list[SettledInterval] = []
        for s in range(s0, s1):
            a = max(start.timestamp(), midnights[-1] + s * SLOT_S)
            b = min(end.timestamp(), midnights[-1] + (s + 1) * SLOT_S)
            base, measured = base_kw[s] / KW_PER_KWH, measured_kw[s] / KW_PER_KWH
            intervals.append(
                {
                    "interval_start": datetime.fromtimestamp(
                        midnights[-1] + s * SLOT_S, start.tzinfo
                    ).isoformat(),
                    "interval_end": datetime.fromtimestamp(
                        midnights[-1] + (s + 1) * SLOT_S, start.tzinfo
                    ).isoformat(),
                    "awarded_kwh": _round(awarded_kw * (b - a) / 3600.0),
                    "baseline_kwh": _round(base),
                    "measured_kwh": _round(measured),
                    "delivered_kwh": _round(base - measured),
                }
            )
        resources: list[SettledResource] = []
        for rid, bess in members:
            own = baseline_of([] if bess else [rid]).kw
            own_kwh = float(own[window].sum()) / KW_PER_KWH if own is not None else 0.0
            used = float(net_kw[rid][-1][window].sum()) / KW_PER_KWH
            resources.append(
                {
                    "resource_id": rid,
                    "baseline_kwh": _round(own_kwh),
                    "measured_kwh": _round(used),
                    "delivered_kwh": _round(own_kwh - used),
                }
            )
        base_total = float(base_kw[window].sum()) / KW_PER_KWH
        used_total = float(measured_kw[window].sum()) / KW_PER_KWH
        return Measured(
            method=rule.method.value,
            baseline_kwh=_round(base_total),
            measured_kwh=_round(used_total),
            delivered_kwh=_round(base_total - used_total),
            days_used=[d.isoformat() for d in whole.days_used],
            adjustment=None if whole.adjustment is None else _round(whole.adjustment),
            note=note,
            intervals=intervals,
            resources=resources,
        )
