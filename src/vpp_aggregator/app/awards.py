"""What became of each award the market gateway sent (its shape is `app/messages.MarketAward`) (one vocabulary for the HTTP
answer, the award's record, the settlement list and the settlement message).

Statuses: when it came, those of every request to the fleet (`app/request_status`: `dispatched`,
`rejected` with the reason, `expired`, here: after its interval ended), or `regulating` for a
regulation award; once the interval is over,
`settled` (delivery measured from telemetry) or `not_delivered` (nothing ran for it)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from vpp_aggregator.app.dispatch_records import DispatchRecord, DispatchStatus
from vpp_aggregator.app.message_fields import InvalidMessageError
from vpp_aggregator.app.request_status import RequestStatus, rejection


class AwardStatus(StrEnum):
    DISPATCHED = RequestStatus.DISPATCHED.value
    REJECTED = RequestStatus.REJECTED.value
    EXPIRED = RequestStatus.EXPIRED.value
    REGULATING = "regulating"  # a regulation award: its fleet follows the signal meanwhile
    SETTLED = "settled"
    NOT_DELIVERED = "not_delivered"


class AwardRefusedError(InvalidMessageError):
    """An award that is not taken, naming the field at fault (dead-lettered when from Kafka)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def never_ran(award: dict[str, Any], record: DispatchRecord | None) -> str | None:
    """Why nothing was delivered for an award whose interval is over, or None when its dispatch
    ran (then delivery is measured, whatever it came to)."""
    if award["status"] == AwardStatus.REGULATING:
        return None  # it ran: what it did is scored, not measured in kWh
    if award["status"] == AwardStatus.EXPIRED or award["dispatch_id"] is None:
        return str(award["reason"] or "no dispatch was made for it")
    if record is None:
        return f"dispatch {award['dispatch_id']} is not known"
    if record.status is DispatchStatus.REJECTED:
        return str(award["reason"] or rejection(record))
    if record.status is DispatchStatus.CANCELLED and record.updated_at <= record.start:
        return (
            f"dispatch {record.dispatch_id} was cancelled before it started "
            f"(at {record.updated_at.isoformat()})"
        )
    return None


def award_view(row: dict[str, Any]) -> dict[str, Any]:
    """One stored award as the API shows it."""
    return {
        "award_id": row["award_id"],
        "aggregation_id": row["aggregation_id"],
        "interval_start": row["interval_start"].isoformat(),
        "interval_end": row["interval_end"].isoformat(),
        "awarded_kw": row["awarded_kw"],
        "price_per_mwh": row["price_per_mwh"],
        "received_at": row["received_at"].isoformat(),
        "status": row["status"],
        "reason": row["reason"],
        "dispatch_id": row["dispatch_id"],
        "product": row.get("product", "energy"),
        "settlement": row["settlement"],
    }
