"""Reports a VEN sends back, as OpenADR 3.1 frames them: a report answers an event (`eventID`,
required) per the event's `reportDescriptors` ("an object that may be used to request a report
from a VEN"), with one entry per resource (or one aggregated, when `aggregate` is true) and one
interval per event interval. Measured from telemetry: `USAGE` is the energy a resource used in
the interval (kWh, consumption positive: export counts negative), `DEMAND` its mean power (kW).
The storage payloads describe each battery as it stands when the report is made."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

MEASURED = {"USAGE": "KWH", "DEMAND": "KW"}
STORAGE = {  # payload type -> (units, what of the battery)
    "STORAGE_USABLE_CAPACITY": "KWH",
    "STORAGE_CHARGE_LEVEL": "PERCENT",
    "STORAGE_MAX_DISCHARGE_POWER": "KW",
    "STORAGE_MAX_CHARGE_POWER": "KW",
}
AGGREGATED = "AGGREGATED_REPORT"


@dataclass(frozen=True, slots=True)
class ReportWindow:
    id: int
    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class Storage:
    """A battery: the usable energy it holds when fully charged (kWh, between its floor and its
    ceiling), its charge level now (0–1 of its capacity, PERCENT as the units table has it),
    and its power limits (kW)."""

    usable_kwh: float
    charge_level: float
    max_discharge_kw: float
    max_charge_kw: float
    capacity_kwh: float = 0.0

    def value(self, payload_type: str) -> float:
        return {
            "STORAGE_USABLE_CAPACITY": self.usable_kwh,
            "STORAGE_CHARGE_LEVEL": self.charge_level,
            "STORAGE_MAX_DISCHARGE_POWER": self.max_discharge_kw,
            "STORAGE_MAX_CHARGE_POWER": self.max_charge_kw,
        }[payload_type]


def report_body(
    event_id: str,
    client_name: str,
    descriptors: Sequence[Mapping[str, Any]],
    windows: Sequence[ReportWindow],
    history: Mapping[str, tuple[NDArray[np.float64], NDArray[np.float64]]],
    storage: Mapping[str, Storage],
    exported_kwh: Callable[[NDArray[np.float64], NDArray[np.float64], float, float], float],
) -> tuple[dict[str, Any], list[str]]:
    """The `reportRequest` for the descriptors this fleet can answer, and the payload types it
    cannot (left out, said). `exported_kwh` is the one delivered-energy rule (sample and hold)."""
    kinds = [(_kind(d), d) for d in descriptors if isinstance(d, Mapping)]
    wanted = [(k, d) for k, d in kinds if k in MEASURED or k in STORAGE]
    skipped = sorted({k for k, _ in kinds} - {k for k, _ in wanted})
    rows: dict[str, list[dict[str, Any]]] = {}
    for kind, d in wanted:
        aggregate = bool(d.get("aggregate", False))
        if kind in MEASURED:
            per = {
                rid: _measured(kind, ts, kw, windows, exported_kwh)
                for rid, (ts, kw) in history.items()
            }
            if not per:
                continue  # nothing measured: nothing is said (no zeros made up)
            if aggregate:
                per = {AGGREGATED: [sum(v[i] for v in per.values()) for i in range(len(windows))]}
            for rid, values in per.items():
                for w, value in zip(windows, values, strict=True):
                    _add(rows, rid, w, kind, value)
        else:
            batteries = {rid: s.value(kind) for rid, s in storage.items()}
            if not batteries:
                continue
            if aggregate and kind == "STORAGE_CHARGE_LEVEL":  # a level: weighted by capacity
                whole = sum(s.capacity_kwh for s in storage.values())
                level = sum(s.charge_level * s.capacity_kwh for s in storage.values())
                batteries = {AGGREGATED: level / whole if whole > 0 else 0.0}
            elif aggregate:
                batteries = {AGGREGATED: sum(batteries.values())}
            now_id = windows[-1].id + 1 if windows else 0  # "as it stands", after the windows
            for rid, value in batteries.items():
                _add(rows, rid, None, kind, value, now_id)
    body = {
        "eventID": event_id,
        "clientName": client_name,
        "reportName": f"{event_id} report",
        "payloadDescriptors": [
            {
                "objectType": "REPORT_PAYLOAD_DESCRIPTOR",
                "payloadType": k,
                "units": MEASURED.get(k) or STORAGE[k],
                # DEMAND: "Reading type indicates MEAN, PEAK, FORECAST"; ours is the mean.
                **({"readingType": "MEAN"} if k == "DEMAND" else {}),
            }
            for k in dict.fromkeys(k for k, _ in wanted)
        ],
        "resources": [{"resourceName": rid, "intervals": ivs} for rid, ivs in rows.items()],
    }
    return body, skipped


def _kind(descriptor: Mapping[str, Any]) -> str:
    """A descriptor's payload type (`payLoadType`, as the User Guide's own examples spell it,
    is read too)."""
    return str(descriptor.get("payloadType") or descriptor.get("payLoadType") or "")


def _measured(
    kind: str,
    ts: NDArray[np.float64],
    kw: NDArray[np.float64],
    windows: Sequence[ReportWindow],
    exported_kwh: Callable[[NDArray[np.float64], NDArray[np.float64], float, float], float],
) -> list[float]:
    out = []
    for w in windows:
        used = -exported_kwh(ts, kw, w.start.timestamp(), w.end.timestamp())
        hours = (w.end - w.start).total_seconds() / 3600.0
        out.append(round(used if kind == "USAGE" else used / hours if hours > 0 else 0.0, 3))
    return out


def _add(
    rows: dict[str, list[dict[str, Any]]],
    resource: str,
    w: ReportWindow | None,
    kind: str,
    value: float,
    now_id: int = 0,
) -> None:
    intervals = rows.setdefault(resource, [])
    key = w.id if w is not None else now_id
    found = next((i for i in intervals if i["id"] == key), None)
    if found is None:
        found = {"id": key, "payloads": []}
        if w is not None:
            found["intervalPeriod"] = {
                "start": w.start.isoformat(),
                "duration": f"PT{int((w.end - w.start).total_seconds())}S",
            }
        intervals.append(found)
    found["payloads"].append({"type": kind, "values": [round(float(value), 3)]})
