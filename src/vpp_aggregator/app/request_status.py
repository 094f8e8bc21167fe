"""What became of a request to the fleet, a market award or a demand-response event, when it
came: one vocabulary and one reason for both, so the HTTP answer, the award's record, the Kafka
message counter and the audit log say the same thing of the same fact.

`dispatched`: a dispatch runs or is scheduled for it (a shortfall shows on the dispatch);
`rejected`: its dispatch found no resource to take it, with the reason;
`expired`: it came after it was over, so nothing is dispatched."""

from __future__ import annotations

from enum import StrEnum

from vpp_aggregator.app.dispatch_records import DispatchRecord, DispatchStatus


class RequestStatus(StrEnum):
    DISPATCHED = "dispatched"
    REJECTED = "rejected"
    EXPIRED = "expired"


def rejection(record: DispatchRecord) -> str:
    """Why a dispatch took nothing, from the rules that bound it."""
    why = "; ".join(f"{r['rule']}: {r['detail']}" for r in record.shortfall_reasons)
    return f"dispatch {record.dispatch_id} was rejected: {why or 'no resource could take it'}"


def dispatch_status(record: DispatchRecord) -> tuple[RequestStatus, str | None]:
    """The status of a request whose dispatch this is, and why when it is `rejected`. A dispatch
    is made, and stored, whatever it found: only its own status tells whether anything runs."""
    if record.status is DispatchStatus.REJECTED:
        return RequestStatus.REJECTED, rejection(record)
    return RequestStatus.DISPATCHED, None
