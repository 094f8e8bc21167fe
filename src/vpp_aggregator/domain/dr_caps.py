"""Site capacity limits a utility sends (OpenADR `IMPORT_CAPACITY_LIMIT`,
`EXPORT_CAPACITY_LIMIT`), and the tightest one that applies to a dispatch.

Definition: "The maximum import [export] level for the site. Payload is a float" (≥ 0). We have
no site meter of our own, so the site is the event's targeted resources (the whole VEN when it
names none), and a limit caps what dispatches on those resources do: charging for an import
limit, discharge for an export limit. A limit only ever lowers what a dispatch does in its own
direction; it never makes the fleet discharge (docs/openadr.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

CAP_TYPES = {"IMPORT_CAPACITY_LIMIT": False, "EXPORT_CAPACITY_LIMIT": True}  # -> export?


@dataclass(frozen=True, slots=True)
class CapWindow:
    start: datetime
    end: datetime | None  # None: open-ended
    kw: float  # ≥ 0
    export: bool  # EXPORT_CAPACITY_LIMIT caps discharge; IMPORT_CAPACITY_LIMIT caps charging


@dataclass(frozen=True, slots=True)
class SiteCap:
    """A limit with the resources it is for and the event that set it."""

    window: CapWindow
    grid_node: str | None
    fleet_id: str | None
    resource_ids: tuple[str, ...] | None
    event_id: str

    @property
    def scope(self) -> dict[str, Any]:
        return {
            "grid_node": self.grid_node,
            "fleet_id": self.fleet_id,
            "resource_ids": self.resource_ids,
        }


def scopes_overlap(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two scopes (`grid_node`, `fleet_id`, `resource_ids`) may share resources: either
    is the whole VEN, or they name the same grid node or fleet, or resources in common. A scope
    of resources may say which grid nodes they are on (`resource_nodes`)."""
    keys = ("grid_node", "fleet_id", "resource_ids")
    mine, theirs = tuple(a.get(k) for k in keys), tuple(b.get(k) for k in keys)
    if mine == (None, None, None) or theirs == (None, None, None):
        return True
    if mine[0] is not None and mine[0] == theirs[0]:
        return True
    if mine[0] in (b.get("resource_nodes") or ()) or theirs[0] in (a.get("resource_nodes") or ()):
        return True
    if mine[1] is not None and mine[1] == theirs[1]:
        return True
    return bool(set(mine[2] or ()) & set(theirs[2] or ()))


def tightest(
    caps: Sequence[SiteCap],
    scope: Mapping[str, Any],
    discharge: bool,
    start: datetime,
    end: datetime,
) -> tuple[float | None, str, dict[str, Any]]:
    """The lowest limit in the dispatch's direction overlapping [start, end) and its scope, with
    the words for it and the site it is for; (None, "", {}) when none applies."""
    best: SiteCap | None = None
    for cap in caps:
        w = cap.window
        if w.export != discharge or w.start >= end or (w.end is not None and w.end <= start):
            continue
        if scopes_overlap(cap.scope, scope) and (best is None or w.kw < best.window.kw):
            best = cap
    if best is None:
        return None, "", {}
    kind = "EXPORT_CAPACITY_LIMIT" if discharge else "IMPORT_CAPACITY_LIMIT"
    why = f"{kind} {best.window.kw:g} kW from event {best.event_id}"
    return best.window.kw, why, best.scope


@dataclass(frozen=True, slots=True)
class Departure:
    """A vehicle on the site that leaves with a required state of charge."""

    resource_id: str
    soc_pct: float
    capacity_kwh: float
    max_charge_kw: float
    leaves: datetime
    required_soc_pct: float


def short_of_departure(
    cap: CapWindow, vehicles: Sequence[Departure], now: datetime, charge_efficiency: float
) -> list[tuple[Departure, float]]:
    """Vehicles that cannot reach their departure's state of charge inside an import limit, and
    by how many kWh (at the grid connection). Each is given the whole limit while it applies and
    full power outside it: a vehicle listed cannot make it whatever the others do."""
    if cap.export:
        return []
    out = []
    for v in vehicles:
        if v.leaves <= max(now, cap.start) or (cap.end is not None and v.leaves > cap.end):
            continue  # gone before the limit begins, or it can charge after the limit ends
        need_kwh = max(0.0, v.required_soc_pct - v.soc_pct) / 100.0 * v.capacity_kwh
        need_kwh /= charge_efficiency
        before_h = max(0.0, (cap.start - now).total_seconds() / 3600.0)
        inside_h = (v.leaves - max(now, cap.start)).total_seconds() / 3600.0
        possible = v.max_charge_kw * before_h + min(v.max_charge_kw, cap.kw) * inside_h
        if need_kwh > possible + 0.05:
            out.append((v, round(need_kwh - possible, 1)))
    return out
