"""Every message the service sends to another layer, as a type: what `asyncapi.yaml` promises
them (`tests/test_message_contracts.py` holds the two together, and the Kafka tests validate
what was really sent). They are `TypedDict`s, checked by mypy where they are built and read by
pydantic in the tests: a dispatch to thousands of vehicles builds its commands at dict speed."""

from __future__ import annotations

from typing import Literal

from typing_extensions import TypedDict

from vpp_aggregator.domain.market import Offer, PriceSegment

__all__ = [
    "AggregateTelemetryMessage",
    "DeadLetter",
    "Offer",
    "PriceSegment",
    "RegulationBroadcast",
    "RegulationCommandMessage",
    "SchedulePoint",
    "SettledInterval",
    "SettledResource",
    "Settlement",
    "V2GCommand",
]


class SchedulePoint(TypedDict):
    t: str  # ISO-8601, one minute apart
    setpoint_kw: float  # positive = discharge to the grid


class V2GCommand(TypedDict):
    """To the device gateway (L7): one per allocation and revision."""

    chargePointId: str
    timestamp: str
    mode: Literal["Charge", "Discharge"]
    limitKw: float  # in the dispatch's direction; 0 for a release (it only ramps down)
    v2xProfile: Literal[True]
    dispatch_id: str
    revision: int
    resource_id: str
    schedule: list[SchedulePoint]


class SettledResource(TypedDict):
    """One resource of the aggregation over the award's interval (batteries: baseline 0)."""

    resource_id: str
    baseline_kwh: float
    measured_kwh: float  # net consumption: negative when it exported
    delivered_kwh: float  # baseline − measured


class SettledInterval(TypedDict):
    """The aggregation in one 5-minute settlement interval."""

    interval_start: str
    interval_end: str
    awarded_kwh: float
    baseline_kwh: float
    measured_kwh: float
    delivered_kwh: float  # the aggregation's: baseline − measured
    credited_kwh: float  # this award's share, where awards overlap (in proportion to kW)


class Settlement(TypedDict):
    """To the market gateway (L4), once per award after its interval."""

    award_id: str
    aggregation_id: str
    interval_start: str
    interval_end: str
    status: Literal["settled", "not_delivered"]
    reason: str | None
    awarded_kw: float
    awarded_kwh: float
    delivered_kwh: float
    delivery_ratio: float | None  # the performance ratio: delivered over awarded energy
    price_per_mwh: float | None
    dispatch_id: str | None
    measured_from: str | None
    baseline_method: str | None
    baseline_kwh: float | None
    measured_kwh: float | None
    baseline_days: list[str]
    baseline_adjustment: float | None
    baseline_note: str | None
    intervals: list[SettledInterval]
    resources: list[SettledResource]
    product: str  # energy | regulation
    performance_score: float | None  # regulation: PJM's score over the interval


class AggregateTelemetryMessage(TypedDict):
    """To L4 and the ISO's telemetry link, per aggregation every few seconds."""

    aggregation_id: str
    timestamp: str
    net_power_kw: float  # positive = exporting to the grid
    available_discharge_kw: float  # the range it can be moved across now
    available_charge_kw: float
    stored_energy_kwh: float
    discharge_energy_kwh: float  # down to every floor
    charge_energy_kwh: float  # up to every ceiling
    resources: int
    resources_reporting: int  # with a sample fresher than VPP_TELEMETRY_STALE_SECONDS


class RegulationCommandMessage(TypedDict):
    """To the device gateway, per resource, only when it changes: follow
    `base_kw + participation_kw × signal` at no more than `ramp_kw_per_min` until `valid_until`
    (then 0 kW); both 0 releases the resource."""

    resource_id: str
    chargePointId: str
    aggregation_id: str
    timestamp: str
    revision: int
    base_kw: float  # positive = discharge
    participation_kw: float  # kW per unit of signal
    ramp_kw_per_min: float
    valid_until: str


class RegulationBroadcast(TypedDict):
    """To the device gateway, per aggregation, every signal value: what its devices multiply."""

    aggregation_id: str
    timestamp: str
    signal: float  # −1…+1


class DeadLetter(TypedDict):
    """A consumed message that can never be handled, with why."""

    reason: str
    topic: str
    partition: int
    offset: int
    value: str  # the original as text, its first 64 KiB
    value_bytes: int
    dead_lettered_at: str
