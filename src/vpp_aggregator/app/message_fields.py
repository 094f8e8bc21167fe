"""The field types of the messages other layers send us, and how a refusal is worded.

Each type carries its own phrase ("must be a non-empty string"), so a message that breaks it is
dead-lettered (Kafka) or answered 422 (HTTP) with `field: phrase`, whichever transport it came by.
The types are strict where the old hand-written checks were (a JSON `true` is not a number) and
lenient where they were (a `site_id` that is not a string counts as absent): the same messages
are taken as before.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any, NoReturn

from pydantic import (
    BeforeValidator,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from vpp_aggregator.domain.instants import instant_problem

PHRASE = "phrase"  # our own error type: the message follows `field: `
VERBATIM = "verbatim"  # our own error type: a domain rule's message, which names its field itself
GENERIC = {  # pydantic's own errors, in the words our own use
    "missing": "is required",
    "dict_type": "must be a JSON object",
    "model_type": "must be a JSON object",
    "model_attributes_type": "must be a JSON object",
    "list_type": "must be a list",
    "literal_error": "is not one of the values allowed",
    "string_type": "must be a string",
    "string_too_short": "must not be empty",
    "float_type": "must be a number",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
}


class InvalidMessageError(ValueError):
    """A message that can never be handled: it goes to the dead-letter topic with this reason."""


def fail(phrase: str, kind: str = PHRASE) -> NoReturn:
    # The phrase travels in the context: a brace in it is text, not a template field.
    raise PydanticCustomError(kind, "{phrase}", {"phrase": phrase})


def describe(errors: Sequence[ErrorDetails], root: str) -> str:
    """One reason for all of a message's problems: `path: phrase; ...` (`root` when the message
    itself is at fault), in the order of the fields."""
    parts = []
    for e in errors:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"]).lstrip(".")
        if e["type"] == VERBATIM:
            parts.append(f"{e['msg']} (at {where})" if where else e["msg"])
        else:
            parts.append(f"{where or root}: {GENERIC.get(e['type'], e['msg'])}")
    return "; ".join(dict.fromkeys(parts))


def refusal(exc: ValidationError, root: str) -> InvalidMessageError:
    return InvalidMessageError(describe(exc.errors(include_url=False), root))


def _text(value: Any) -> str:
    if isinstance(value, str) and value:
        return value
    fail("must be a non-empty string")


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        fail("must be a number")
    return float(value)


def _finite(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        fail("must be a finite number")
    return float(value)


def _iso_time(value: Any) -> datetime:
    """An ISO-8601 string read as Python reads it."""
    if not isinstance(value, str):
        fail("must be an ISO-8601 date-time string")
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        fail(f"{value[:40]!r} is not an ISO-8601 date-time")


def _aware_time(value: Any) -> datetime:
    """An instant the service keeps (stored, settled): with an offset, within its years."""
    at = _iso_time(value)
    problem = instant_problem(at)
    if problem is not None:
        fail(problem)
    return at


def _offset_time(value: Any) -> datetime:
    """An instant only compared with the clock (a demand-response period): with an offset."""
    at = _iso_time(value)
    if at.tzinfo is None or at.utcoffset() is None:
        fail("needs a time zone offset, e.g. 2026-11-25T12:00:00Z")
    return at


def _epoch_seconds(value: Any) -> float:
    """Telemetry time as epoch seconds; NaN when it has no offset, which ingest refuses with its
    own reason (the batch checks run vectorised, after this per-sample reading)."""
    if not isinstance(value, str):
        fail("must be an ISO-8601 date-time string")
    return _epoch_of(value)


@functools.lru_cache(maxsize=8192)
def _epoch_of(value: str) -> float:
    """Cached: a gateway's batch stamps many samples with the same second, and reading the
    string was a quarter of ingest's CPU time."""
    at = _iso_time(value)
    return at.timestamp() if at.tzinfo is not None else math.nan


_DURATIONS = TypeAdapter(timedelta)  # pydantic's ISO-8601 duration reader (PT1H, P1DT2H30M, …)


def _duration(value: Any) -> timedelta:
    """An ISO-8601 duration, as OpenADR writes them; the clock forms pydantic also reads
    (`01:00:00`) and negative durations are refused."""
    refusal = f"duration {value!r} is not an ISO-8601 duration like PT1H"
    if not isinstance(value, str) or not value.strip().startswith("P"):
        fail(refusal, VERBATIM)
    try:
        return _DURATIONS.validate_strings(value.strip())
    except ValidationError:
        fail(refusal, VERBATIM)


def _string_or_absent(value: Any) -> str | None:
    return value if isinstance(value, str) else None


_STRING = {"type": "string"}
_TIME = {"type": "string", "format": "date-time"}
_NUMBER = {"type": "number"}

Text = Annotated[str, PlainValidator(_text), WithJsonSchema({**_STRING, "minLength": 1})]
Number = Annotated[float, PlainValidator(_number), WithJsonSchema(_NUMBER)]
FiniteNumber = Annotated[float, PlainValidator(_finite), WithJsonSchema(_NUMBER)]
AwareTime = Annotated[datetime, PlainValidator(_aware_time), WithJsonSchema(_TIME)]
OffsetTime = Annotated[datetime, PlainValidator(_offset_time), WithJsonSchema(_TIME)]
EpochSeconds = Annotated[float, PlainValidator(_epoch_seconds), WithJsonSchema(_TIME)]
IsoDuration = Annotated[timedelta, PlainValidator(_duration), WithJsonSchema(_STRING)]
# Fields the other layers fill in varied shapes: anything but a string counts as not sent.
StringOrAbsent = Annotated[str | None, BeforeValidator(_string_or_absent), WithJsonSchema(_STRING)]
