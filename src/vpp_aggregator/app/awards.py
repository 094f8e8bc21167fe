"""Awards as the market gateway sends them, and what became of each (one vocabulary for the HTTP
answer, the award's record, the settlement list and the settlement message).

Statuses: when it came, those of every request to the fleet (`app/request_status`: `dispatched`,
`rejected` with the reason, `expired`, here: after its interval ended); once the interval is over,
`settled` (delivery measured from telemetry) or `not_delivered` (nothing ran for it)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from vpp_aggregator.app.dispatch_records import DispatchRecord, DispatchStatus
from vpp_aggregator.app.integration import InvalidMessageError
from vpp_aggregator.app.request_status import RequestStatus, rejection
from vpp_aggregator.domain.instants import instant_problem

AWARD_ID_MAX = 128  # the stored award id's length


class AwardStatus(StrEnum):
    DISPATCHED = RequestStatus.DISPATCHED.value
    REJECTED = RequestStatus.REJECTED.value
    EXPIRED = RequestStatus.EXPIRED.value
    SETTLED = "settled"
    NOT_DELIVERED = "not_delivered"


class AwardRefusedError(InvalidMessageError):
    """An award that is not taken, naming the field at fault (dead-lettered when from Kafka)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Award:
    award_id: str
    aggregation_id: str
    interval_start: datetime
    interval_end: datetime
    awarded_kw: float
    price_per_mwh: float | None


def read_award(message: Any, nodes: set[str] | frozenset[str]) -> Award:
    """The award in a message, or an `AwardRefusedError` naming the field that cannot be read."""
    if not isinstance(message, dict):
        raise InvalidMessageError("award must be a JSON object")
    award_id = message.get("award_id")
    node = message.get("aggregation_id") or message.get("grid_node")
    if not isinstance(award_id, str) or not 0 < len(award_id) <= AWARD_ID_MAX:
        raise AwardRefusedError("award_id", f"must be 1 to {AWARD_ID_MAX} characters")
    if not isinstance(node, str) or node not in nodes:
        raise AwardRefusedError("aggregation_id", f"{node!r} is not an aggregation of ours")
    price = message.get("price_per_mwh")
    return Award(
        award_id,
        node,
        _when(message.get("interval_start"), "interval_start"),
        _when(message.get("interval_end"), "interval_end"),
        _number(message.get("awarded_kw"), "awarded_kw"),
        None if price is None else _number(price, "price_per_mwh"),
    )


def _when(value: Any, field: str) -> datetime:
    if not isinstance(value, str):
        raise AwardRefusedError(field, "must be an ISO-8601 date-time string")
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise AwardRefusedError(field, f"{value!r} is not an ISO-8601 date-time") from None
    problem = instant_problem(at)
    if problem is not None:
        raise AwardRefusedError(field, problem)
    return at


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AwardRefusedError(field, "must be a finite number")
    return float(value)


def never_ran(award: dict[str, Any], record: DispatchRecord | None) -> str | None:
    """Why nothing was delivered for an award whose interval is over, or None when its dispatch
    ran (then delivery is measured, whatever it came to)."""
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
        "settlement": row["settlement"],
    }
