"""Every message the other layers send us, as a type, read once where it enters.

The Kafka consumer and the HTTP routes build the same objects (a telemetry sample, a market
award), so a rule about a field is written once here and holds on both. `asyncapi.yaml` describes
these types to the other layers (tests/test_message_contracts.py holds the two together).
Reading a message refuses it with every problem at once, as `field: phrase` (`message_fields`).
"""

from __future__ import annotations

from itertools import repeat
from typing import Annotated, Any, Literal, NotRequired, TypeVar

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    Field,
    StrictBool,
    StrictFloat,
    StrictStr,
    TypeAdapter,
    ValidationError,
)
from typing_extensions import TypedDict

from vpp_aggregator.app.message_fields import (
    AwareTime,
    EpochSeconds,
    FiniteNumber,
    StringOrAbsent,
    Text,
    describe,
    fail,
    refusal,
)

M = TypeVar("M", bound=BaseModel)
AWARD_ID_MAX = 128  # the stored award id's length
PLUG_EVENTS = ("CHARGER_CONNECTED", "CHARGER_DISCONNECTED")


def _empty_if_falsy(value: Any) -> Any:
    """Other layers send null, "" or {} for "none" as often as []: all mean none."""
    return value or []


# ------------------------------------------------------------------ telemetry (L1 -> us)
class TelemetrySample(TypedDict):
    """A dict, not a model, and pydantic's own strict types but for the time: a batch holds up
    to 10,000 samples, and this reads them three times faster than models with our own
    validators (the range checks run vectorised in `TelemetryService.ingest`)."""

    resource_id: Annotated[StrictStr, Field(min_length=1)]
    timestamp: EpochSeconds  # on the wire: ISO-8601 with an offset
    soc_pct: StrictFloat
    plugged_in: StrictBool
    power_kw: NotRequired[StrictFloat | None]  # absent or null: 0 kW


class SampleBatchMessage(BaseModel):
    """The batch form of the telemetry topic; its samples are read one by one (one bad sample
    does not sink the others), so here they are only a list."""

    samples: list[Any]


_SAMPLES = TypeAdapter(list[TelemetrySample])


def read_samples(raw: list[Any]) -> tuple[list[int], list[TelemetrySample], list[tuple[int, str]]]:
    """The good samples with their positions, and (position, reason) for each bad one."""
    try:
        return list(range(len(raw))), _SAMPLES.validate_python(raw), []
    except ValidationError as exc:
        problems: dict[int, list[Any]] = {}
        for e in exc.errors(include_url=False):
            problems.setdefault(int(e["loc"][0]), []).append({**e, "loc": e["loc"][1:]})
    good = [i for i in range(len(raw)) if i not in problems]
    samples = _SAMPLES.validate_python([raw[i] for i in good])  # each was valid on its own
    return good, samples, [(i, describe(p, "sample")) for i, p in sorted(problems.items())]


def single_samples(messages: list[Any]) -> bool:
    """Whether no message is in the batch form, so that each message is one sample (its
    index the sample's): `samples_in` would give each as it is. Mapped in C when all are
    objects, as a telemetry batch's messages are."""
    try:
        return not any(map(dict.__contains__, messages, repeat("samples")))
    except TypeError:  # some message is not an object: a (malformed) sample of its own
        return not any(isinstance(m, dict) and "samples" in m for m in messages)


def samples_in(message: Any) -> list[Any]:
    """The samples a telemetry message carries: itself, or its `samples`."""
    if isinstance(message, dict) and "samples" in message:
        try:
            return SampleBatchMessage.model_validate(message).samples
        except ValidationError as exc:
            raise refusal(exc, "message") from None
    return [message]


# Grid signals (L2 -> us) are OpenADR 3 events: adapters/openadr reads them.


# ------------------------------------------------------------------ device gateway (L7 -> us)
class ChargerPlugEvent(BaseModel):
    """A charger connect or disconnect: availability changes at once, on the charger's word."""

    event: Literal["CHARGER_CONNECTED", "CHARGER_DISCONNECTED"]
    chargePointId: Text
    timestamp: StringOrAbsent = None  # read as a telemetry sample's; absent: now


class OtherChargingEvent(BaseModel):
    """Any other charging event: it does not change availability."""

    event: Any = None


def read_charging_event(message: Any) -> ChargerPlugEvent | OtherChargingEvent:
    """A plug event must name its charge point; any other event is taken as it is (ignored)."""
    kind = message.get("event") if isinstance(message, dict) else None
    if kind in PLUG_EVENTS:
        return read(ChargerPlugEvent, message, "event")
    return read(OtherChargingEvent, message, "event")


class CommandAck(BaseModel):
    """The device gateway's answer to a command. Which resource it is about needs the fleet
    (a `chargePointId` stands in for a missing `resource_id`), so that check is the handler's."""

    dispatch_id: Text
    status: Text  # Accepted or Rejected, any case, or a word for either (`IntegrationService`)
    resource_id: StringOrAbsent = None
    chargePointId: StringOrAbsent = None
    reason: StringOrAbsent = None


# ------------------------------------------------------------------ physics engine (L1 -> us)
class PhysicsAlert(BaseModel):
    vehicle_id: Text
    event_type: StringOrAbsent = None
    status: StringOrAbsent = None  # CLEARED lifts the suspension
    fleet_id: StringOrAbsent = None


# ------------------------------------------------------------------ market gateway (L4 -> us)
def _award_id(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= AWARD_ID_MAX:
        fail(f"must be 1 to {AWARD_ID_MAX} characters")
    return value


class MarketAward(BaseModel):
    """A cleared offer, as `vpp.market.awards` and `POST /market/awards` carry it. Whether it
    clears one of our offers needs the store: that is `MarketService.award`'s."""

    award_id: Annotated[
        str, BeforeValidator(_award_id), Field(min_length=1, max_length=AWARD_ID_MAX)
    ]
    aggregation_id: Text = Field(validation_alias=AliasChoices("aggregation_id", "grid_node"))
    interval_start: AwareTime
    interval_end: AwareTime
    awarded_kw: FiniteNumber
    price_per_mwh: FiniteNumber | None = None
    product: Literal["energy", "regulation"] = "energy"


class RegulationSignal(BaseModel):
    """The grid operator's regulation signal, as `vpp.regulation.signal` and
    `POST /regulation/signal` carry it: a share of the regulation capacity, −1 (absorb all of
    it) … +1 (inject all of it), for one aggregation or, without `aggregation_id`, for every
    one that regulates now."""

    value: Annotated[FiniteNumber, Field(ge=-1.0, le=1.0)]
    timestamp: AwareTime | None = None
    aggregation_id: Text | None = None


def read(model: type[M], message: Any, root: str) -> M:
    """`message` as a `model`, or an `InvalidMessageError` naming every field at fault."""
    try:
        return model.model_validate(message)
    except ValidationError as exc:
        raise refusal(exc, root) from None
