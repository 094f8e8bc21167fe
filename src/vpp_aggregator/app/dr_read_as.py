"""What a demand-response event was read as, in the words the dashboard and `GET /dr/events`
show an operator."""

from __future__ import annotations

from typing import Any

from vpp_aggregator.domain.dr_asks import Reading
from vpp_aggregator.domain.dr_event import DrEvent


def windows_read_as(event: DrEvent, reading: Reading) -> list[dict[str, Any]]:
    """What each window was read as, for the operator: payload, kW in our signs, interval."""
    out: list[dict[str, Any]] = [
        {
            "key": a.key,
            "meaning": a.meaning,
            "target_kw": a.target_kw,
            "share": a.share,
            "start": a.start.isoformat(),
            "end": a.end.isoformat() if a.end else None,
        }
        for a in reading.asks
    ]
    out += [
        {
            "key": event.event_id,
            "meaning": f"{'EXPORT_PRICE' if p.export else 'PRICE'} {p.usd_per_kwh:g} $/kWh"
            + ("" if p.export else " (recharges buy at it)"),
            "start": p.start.isoformat(),
            "end": p.end.isoformat() if p.end else None,
        }
        for p in reading.prices
    ]
    out += [
        {
            "key": event.event_id,
            "meaning": f"{'EXPORT' if c.export else 'IMPORT'}_CAPACITY_LIMIT {c.kw:g} kW: "
            + ("discharge" if c.export else "charging")
            + " of dispatches on the targeted resources kept within it",
            "start": c.start.isoformat(),
            "end": c.end.isoformat() if c.end else None,
        }
        for c in reading.caps
    ]
    out += [
        {"key": f"{event.event_id}:{u.interval_id}", "meaning": f"{u.payload_type}: {u.reason}"}
        for u in reading.unread
    ]
    return out
