"""The dispatch service's ports (store, bus, metrics), its request and errors."""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from vpp_aggregator.app.dispatch_records import (
    DispatchRecord,
    DispatchStatus,
    RevisionRecord,
)
from vpp_aggregator.app.outbound import V2GCommand

MAX_DURATION_MIN = 24 * 60
PAST_TOLERANCE = timedelta(minutes=1)


class DispatchStore(Protocol):
    def adopt(
        self, owner: str, followed: Sequence[str], now: datetime, until: datetime
    ) -> tuple[builtins.set[str], builtins.list[DispatchRecord]]: ...
    def release(self, owner: str, at: datetime) -> None: ...
    def add_refusal(
        self, dispatch_id: str, resource_id: str, reason: str, at: datetime
    ) -> None: ...
    def take_refusals(
        self, dispatch_ids: Sequence[str], at: datetime
    ) -> builtins.list[tuple[str, str, str]]: ...
    def insert(
        self,
        record: DispatchRecord,
        commands: Sequence[V2GCommand],
        at: datetime,
        owner: str | None = None,
        lease_until: datetime | None = None,
    ) -> None: ...
    def revise(
        self,
        record: DispatchRecord,
        reason: str,
        detail: dict[str, Any],
        commands: Sequence[V2GCommand],
        at: datetime,
        owner: str | None = None,
    ) -> None: ...
    def take_over(self, dispatch_id: str, owner: str, until: datetime) -> DispatchRecord | None: ...
    def set_status(self, dispatch_id: str, status: DispatchStatus, at: datetime) -> None: ...
    def find_by_key(self, key: str) -> DispatchRecord | None: ...
    def get(self, dispatch_id: str) -> DispatchRecord | None: ...
    def list(
        self,
        *,
        status: Sequence[str] = (),
        source: str | None = None,
        reference: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[builtins.list[DispatchRecord], int]: ...
    def open_dispatches(self, source: str) -> builtins.list[DispatchRecord]: ...
    def held_resources(
        self,
        start: datetime,
        end: datetime,
        exclude: str | None = None,
        recharges_from: datetime | None = None,
    ) -> builtins.list[str]: ...
    def planning_lock(self) -> contextlib.AbstractContextManager[None]: ...
    def revisions(self, dispatch_id: str) -> builtins.list[RevisionRecord]: ...
    def relay_commands(
        self,
        send: Callable[[builtins.list[dict[str, Any]]], builtins.list[bool]],
        at: datetime,
        limit: int = 10_000,
    ) -> int: ...


class Bus(Protocol):
    def publish(self, topic: str, key: str, payload: Mapping[str, Any]) -> None: ...
    def publish_many(
        self, topic: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[bool]:
        """Send in order (per key); which ones were delivered."""
        ...


class DispatchMetricsPort(Protocol):
    def observe(self, record: DispatchRecord) -> None: ...
    def status_changed(self, status: DispatchStatus) -> None: ...


class DispatchRejectedError(Exception):
    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {m}" for f, m in errors))
        self.errors = errors


class DispatchNotFoundError(Exception):
    """No dispatch with that id."""


class DispatchConflictError(Exception):
    """The dispatch cannot change that way in its present state."""


@dataclass(frozen=True, slots=True)
class DispatchRequest:
    target_kw: float
    duration_minutes: int
    start: datetime | None = None
    grid_node: str | None = None
    fleet_id: str | None = None
    resource_ids: tuple[str, ...] | None = None
    source: str = "manual"
    reference: str | None = None
    idempotency_key: str | None = None
    # Recharges stop each battery where it was before the discharge (never above the target).
    charge_ceiling_pct: dict[str, float] | None = None
    # A state-of-charge goal downwards: each battery discharges no lower than its figure.
    discharge_floor_pct: dict[str, float] | None = None
    # Reach the target by `start`: the ramp begins before it (an award pays from its first
    # minute, and a fleet at 10 kW/min per resource needs minutes to get there).
    ramp_in: bool = False


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """What a dispatch is doing right now."""

    planned_kw: float
    delivered_kw: float | None  # from the allocated resources' fresh telemetry
    reporting_resources: int
