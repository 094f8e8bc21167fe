"""What happened, told once; what follows from it is subscribed once.

A service publishes the fact (telemetry accepted, resources changed, a dispatch ended, a
message handled) and does not know who listens. The side effects (forecast history, sharing
with the other replicas through Redis, re-checking running dispatches, recharging batteries,
the audit trail) are handlers in one table, `bootstrap.subscribe_handlers`. The fact is
already stored when it is published, so a failing handler is logged and the others still run;
a `required` one (the audit trail) fails the publisher instead, so that nothing is lost: a
message whose audit entry could not be written is redelivered.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.log_filter import RepeatFilter

if TYPE_CHECKING:
    from vpp_aggregator.app.audit import Actor
    from vpp_aggregator.app.dispatch_records import DispatchRecord
    from vpp_aggregator.app.outcome import Outcome

log = logging.getLogger(__name__)
log.addFilter(RepeatFilter(window_s=60.0))  # a Redis outage fails every telemetry batch


@dataclass(frozen=True, slots=True)
class TelemetryAccepted:
    """Samples now in the live state, as columns. `here` is False for samples another
    replica accepted (and stored), read back through Redis: they must not be shared again.
    `rows`: the samples' rows and generations as found on acceptance
    (`FleetColumns.history_rows`), so the forecast history checks them instead of looking
    each id up a second time."""

    resource_ids: list[str]
    timestamp_s: NDArray[np.float64]
    soc_pct: NDArray[np.float64]
    plugged_in: NDArray[np.bool_]
    power_kw: NDArray[np.float64]
    here: bool = True
    rows: tuple[NDArray[np.int64], NDArray[np.uint32]] | None = None


@dataclass(frozen=True, slots=True)
class ResourcesChanged:
    """Registered, changed or deactivated here (stored, and in the live state)."""

    resource_ids: list[str]


@dataclass(frozen=True, slots=True)
class DispatchEnded:
    """A dispatch completed or was cancelled; `drawn_pct` is the SoC each resource gave."""

    record: DispatchRecord
    at: datetime
    drawn_pct: dict[str, float]


@dataclass(frozen=True, slots=True)
class MessageHandled:
    """A message from another layer was acted on, by `sender` (the topic it came from)."""

    sender: Actor
    outcome: Outcome


E = TypeVar("E")


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[type, list[tuple[str, Callable[[Any], object], bool]]] = {}

    def subscribe(
        self, kind: type[E], name: str, handler: Callable[[E], object], *, required: bool = False
    ) -> None:
        self._handlers.setdefault(kind, []).append((name, handler, required))

    def publish(self, event: object) -> None:
        for name, handler, required in self._handlers.get(type(event), ()):
            try:
                handler(event)
            except Exception as exc:
                if required:
                    raise
                log.warning(
                    "%s after %s failed: %s: %s",
                    name,
                    type(event).__name__,
                    type(exc).__name__,
                    exc,
                )

    def table(self) -> dict[str, list[str]]:
        """Event name -> its handlers' names, in the order they run (for readers and tests)."""
        return {kind.__name__: [n for n, _, _ in hs] for kind, hs in self._handlers.items()}
