"""What a demand-response event asks of the fleet: each payload's meaning, in our signs
(positive kW = discharge), and which resources its targets name. `docs/openadr.md` has the
table; the standard's words are quoted where they decide."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from vpp_aggregator.domain.dr_caps import CAP_TYPES, CapWindow
from vpp_aggregator.domain.dr_event import DrEvent, Payload, Window, windows
from vpp_aggregator.domain.dr_prices import PRICE_TYPES, PriceWindow, prices_in

POWER_UNITS_KW = {"KW": 1.0, "W": 0.001, "MW": 1000.0}  # a descriptor's units, to kW


@dataclass(frozen=True, slots=True)
class Policy:
    """What the operator decided for signals that name no figure (`docs/openadr.md`): the share
    of the scope's available discharge power to export for each `SIMPLE` level (0 to 3), and for
    an `ALERT_GRID_EMERGENCY`. 0 exports nothing."""

    simple_levels: tuple[float, float, float, float] = (0.0, 0.25, 0.5, 1.0)
    emergency_share: float = 1.0
    ven: str = ""  # this VEN's name: seeds randomizeStart, so that VENs do not all shift alike

    @classmethod
    def parse(cls, levels: str, emergency_share: float, ven: str = "") -> Policy:
        """`levels` as "0,0.25,0.5,1" (a share for each level 0, 1, 2, 3)."""
        try:
            shares = tuple(float(x) for x in levels.split(","))
        except ValueError:
            raise ValueError(f"{levels!r}: expected four shares like 0,0.25,0.5,1") from None
        if len(shares) != 4 or not all(0.0 <= x <= 1.0 for x in (*shares, emergency_share)):
            raise ValueError(f"{levels!r}: four shares between 0 and 1, one per SIMPLE level")
        return cls((shares[0], shares[1], shares[2], shares[3]), emergency_share, ven)


@dataclass(frozen=True, slots=True)
class FleetAsk:
    """What one window asks of the fleet: a power target in our signs; or, with `target_kw`
    None, a share of the scope's available discharge power (`share`; None: the configured
    `VPP_DR_POLICY` decides, for the platform's `v2g_requested`)."""

    key: str  # event id and interval: the same key never dispatches twice
    target_kw: float | None
    start: datetime
    end: datetime | None  # None: open-ended
    meaning: str  # the payload as read, for the operator
    share: float | None = None
    charge_state: tuple[float, str] | None = None  # CHARGE_STATE_SETPOINT: (value, units)


SOC_UNITS = ("PERCENT", "KWH")


@dataclass(frozen=True, slots=True)
class Battery:
    """A battery in an event's scope that can charge now."""

    resource_id: str
    soc_pct: float
    capacity_kwh: float
    max_charge_kw: float
    max_discharge_kw: float


def charge_state_pct(value: float, units: str, capacity_kwh: float) -> float:
    """CHARGE_STATE_SETPOINT as a battery's SoC %: PERCENT is a fraction 0.0–1.0 (Definition,
    units: "0.0 to 1.0 in cases where negative values are irrelevant"), KWH the energy stored."""
    pct = value * 100.0 if units == "PERCENT" else value / capacity_kwh * 100.0
    return min(100.0, max(0.0, pct))


@dataclass(frozen=True, slots=True)
class Unread:
    """A payload the fleet does not act on, and why: reported, never guessed."""

    interval_id: str
    payload_type: str
    reason: str


@dataclass(frozen=True, slots=True)
class Reading:
    """Everything the event asks, what it carries that the fleet does not act on, and the
    windows that asked something but are already over (key, end)."""

    asks: list[FleetAsk]
    unread: list[Unread]
    ended: list[tuple[str, datetime]]
    prices: list[PriceWindow] = field(default_factory=list)  # the tariff's, where they apply
    caps: list[CapWindow] = field(default_factory=list)  # site limits on dispatches
    # Every window's asks as the event states them, ended ones too (unclipped): runs are
    # grouped on these, so a run keeps its name once its first window is over.
    every: list[FleetAsk] = field(default_factory=list)


def _kw(event: DrEvent, payload: Payload) -> tuple[float | None, str]:
    """A payload's one power figure in kW, from its descriptor's units (KW when none is given)."""
    units = (event.units.get(payload.type) or "KW").upper()
    if units not in POWER_UNITS_KW:
        return None, f"units {units!r} are not power (KW, W, MW)"
    if len(payload.values) != 1:
        return None, f"{len(payload.values)} values where the standard defines one"
    value = payload.values[0]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"value {value!r} is not a number"
    return float(value) * POWER_UNITS_KW[units], ""


def _level(payload: Payload) -> int | None:
    value = payload.values[0] if len(payload.values) == 1 else None
    ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 3
    return value if ok else None


def _asks_of(
    event: DrEvent,
    w: Window,
    policy: Policy,
    unread: list[Unread],
    prices: list[PriceWindow],
    caps: list[CapWindow],
) -> list[FleetAsk]:
    key = event.event_id if not event.intervals else f"{event.event_id}:{w.interval.id}"
    asks = []
    for payload in w.interval.payloads:
        if payload.type == "CHARGE_STATE_SETPOINT":  # "the state of charge of a storage resource"
            units = (event.units.get(payload.type) or "").upper()
            value = payload.values[0] if len(payload.values) == 1 else None
            if units not in SOC_UNITS:
                why = f"units {units or 'none'!r}: PERCENT or KWH is needed"
                unread.append(Unread(w.interval.id, payload.type, why))
            elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                unread.append(Unread(w.interval.id, payload.type, "the value is not a number ≥ 0"))
            else:
                meaning = f"CHARGE_STATE_SETPOINT: batteries to {value:g} {units}"
                asks.append(
                    FleetAsk(key, None, w.start, w.end, meaning, charge_state=(float(value), units))
                )
            continue
        if payload.type in CAP_TYPES:
            kw, why = _kw(event, payload)
            if kw is None or kw < 0:
                unread.append(Unread(w.interval.id, payload.type, why or "a limit is ≥ 0"))
            else:
                caps.append(CapWindow(w.start, w.end, kw, CAP_TYPES[payload.type]))
            continue
        if payload.type in PRICE_TYPES:
            found, why = prices_in(event, w, payload)
            prices.extend(found)
            if why:
                unread.append(Unread(w.interval.id, payload.type, why))
            continue
        if payload.type == "SIMPLE":  # "an integer of 0, 1, 2, or 3"
            level = _level(payload)
            if level is None:
                unread.append(Unread(w.interval.id, "SIMPLE", "the value is not 0, 1, 2 or 3"))
                continue
            share = policy.simple_levels[level]
            meaning = f"SIMPLE level {level}: export {share:.0%} of available discharge"
            asks.append(FleetAsk(key, None, w.start, w.end, meaning, share))
            continue
        if payload.type == "ALERT_GRID_EMERGENCY":  # "imminent risk of the grid failing"
            share = policy.emergency_share
            meaning = f"ALERT_GRID_EMERGENCY: export {share:.0%} of available discharge"
            asks.append(FleetAsk(key, None, w.start, w.end, meaning, share))
            continue
        if payload.type != "DISPATCH_SETPOINT":
            unread.append(Unread(w.interval.id, payload.type, "not acted on by this fleet"))
            continue
        kw, why = _kw(event, payload)
        if kw is None or kw < 0:
            unread.append(Unread(w.interval.id, payload.type, why or f"{kw:g} kW is below zero"))
            continue
        if kw <= 1e-6:  # consume nothing: no dispatch charges these resources in the window
            caps.append(CapWindow(w.start, w.end, 0.0, export=False))
            continue
        asks.append(FleetAsk(key, -kw, w.start, w.end, f"DISPATCH_SETPOINT: consume {kw:g} kW"))
    return asks


def read_event(
    event: DrEvent,
    now: datetime,
    default: timedelta,
    policy: Policy | None = None,
    horizon: datetime | None = None,
) -> Reading:
    """What the event asks of the fleet, window by window.

    - `DISPATCH_SETPOINT` is "the absolute amount of consumption by a resource": the targeted
      resources' total consumption is X kW, so the fleet charges X (a target of −X). A figure
      below zero is no consumption and is reported unread.
    - The platform's `der_control.set_point_kw` (positive = export) and `v2g_requested` ask for
      V2G export in a window that carries no power payload of its own.
    - `SIMPLE` levels and `ALERT_GRID_EMERGENCY` export the `policy`'s share of the scope's
      available discharge power.
    - Any other payload type is reported unread, with the reason.
    """
    policy = policy or Policy()
    unread: list[Unread] = []
    asks: list[FleetAsk] = []
    ended: list[tuple[str, datetime]] = []
    wants_v2g = event.set_point_kw is not None or event.v2g_requested
    if event.cancelled:
        return Reading([], [], [])
    prices: list[PriceWindow] = []
    caps: list[CapWindow] = []
    every: list[FleetAsk] = []
    for w in windows(event, default, now, policy.ven, horizon):
        found = _asks_of(event, w, policy, unread, prices, caps)
        if not found and wants_v2g and not every:
            figure = event.set_point_kw
            meaning = "V2G export" + (f" {figure:g} kW" if figure is not None else "")
            found = [FleetAsk(event.event_id, figure, w.start, w.end, meaning)]
        every.extend(found)
        if w.end is not None and w.end <= now:
            ended.extend((a.key, w.end) for a in found)
            continue
        asks.extend(
            FleetAsk(
                a.key, a.target_kw, max(a.start, now), a.end, a.meaning, a.share, a.charge_state
            )
            for a in found
        )
    return Reading(asks, unread, ended, prices, caps, every)


@dataclass(frozen=True, slots=True)
class Scope:
    """Which resources an event is for: one grid node, one fleet, named resources, or (all
    None) every resource of the VEN."""

    grid_node: str | None = None
    fleet_id: str | None = None
    resource_ids: tuple[str, ...] | None = None


class UnsupportedTargetsError(ValueError):
    """Targets this service cannot act on as one dispatch (several grid nodes, say)."""


def target_scope(
    event: DrEvent, names: Mapping[str, Mapping[str, Any]], grid_nodes: set[str]
) -> tuple[Scope | None, str]:
    """The event's targets as a scope, or None and why it is not for us.

    3.1 targets are names: the operator's mapping (`VPP_OPENADR_TARGETS`) says what each is (a
    grid node, a fleet, resources); an unmapped name that is a grid node's is that node. 3.0.1
    `GRID_NODE` targets and the platform's `site_id` name grid nodes. No target at all is the
    whole VEN: a server sends a VEN only what is meant for it (User Guide §7.10)."""
    nodes: set[str] = set(event.grid_nodes)
    fleets: set[str] = set()
    resources: list[str] = []
    unknown: list[str] = []
    for name in event.targets:
        meant = names.get(name)
        if meant:
            node, fleet, ids = (
                meant.get("grid_node"),
                meant.get("fleet_id"),
                meant.get("resource_ids"),
            )
            nodes |= {node} if isinstance(node, str) else set()
            fleets |= {fleet} if isinstance(fleet, str) else set()
            resources += [str(r) for r in ids] if isinstance(ids, list) else []
        elif name in grid_nodes:
            nodes.add(name)
        else:
            unknown.append(name)
    if not event.targets and not event.grid_nodes:
        if event.site is None:
            return Scope(), ""
        nodes.add(event.site)
    if not nodes and not fleets and not resources:
        return None, f"targets {', '.join(unknown)} name nothing here (VPP_OPENADR_TARGETS)"
    if sum(map(bool, (nodes, fleets, resources))) > 1 or len(nodes) > 1 or len(fleets) > 1:
        raise UnsupportedTargetsError(
            "events targeting several grid nodes or fleets at once are not supported; "
            "send one per node"
        )
    node = next(iter(nodes), None)
    if node is not None and node not in grid_nodes:
        return None, f"no resource of this aggregator is on {node!r}"
    return Scope(node, next(iter(fleets), None), tuple(dict.fromkeys(resources)) or None), ""
