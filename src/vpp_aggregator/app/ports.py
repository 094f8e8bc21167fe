"""What the use cases need from storage; the store adapter implements it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.domain.resources import Resource


@dataclass(frozen=True, slots=True)
class StoredSample:
    resource_id: str
    timestamp: datetime
    soc_pct: float
    plugged_in: bool
    power_kw: float


class ResourceStore(Protocol):
    def add(self, resource: Resource) -> None:
        """Insert; raises DuplicateResourceError when the id exists."""

    def add_many(self, items: Sequence[Resource]) -> None: ...
    def save(self, resource: Resource) -> None: ...
    def get(self, resource_id: str) -> Resource | None: ...
    def live_resources(self) -> Iterable[Resource]: ...
    def insert_samples(
        self,
        resource_ids: Sequence[str],
        timestamp_s: NDArray[np.float64],
        soc_pct: NDArray[np.float64],
        plugged_in: NDArray[np.bool_],
        power_kw: NDArray[np.float64],
        received_at: datetime,
    ) -> None:
        """Append history; a replayed (resource, timestamp) sample is ignored, not duplicated."""

    def latest_samples(self) -> Iterable[StoredSample]: ...
    def samples_received_since(self, since: datetime | None) -> Iterable[StoredSample]: ...
    def last_snapshot_at(self) -> datetime | None: ...
    def upsert_latest(
        self,
        resource_ids: Sequence[str],
        timestamp_s: NDArray[np.float64],
        soc_pct: NDArray[np.float64],
        plugged_in: NDArray[np.bool_],
        power_kw: NDArray[np.float64],
        snapshot_at: datetime,
    ) -> None: ...
    def ping(self) -> None: ...
    def upsert_weather(
        self, hours: Sequence[tuple[datetime, float | None, float | None]]
    ) -> None: ...
    def weather_between(
        self, start: datetime, end: datetime
    ) -> list[tuple[datetime, float | None, float | None]]: ...
    def add_event(self, event: dict[str, Any]) -> None: ...
    def events_between(self, start: datetime, end: datetime) -> list[dict[str, Any]]: ...
    def history_chunks(
        self, start: datetime, end: datetime, size: int = 100_000
    ) -> Iterator[
        tuple[list[str], NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64]]
    ]: ...
    def list(
        self,
        *,
        resource_type: str | None = None,
        grid_node: str | None = None,
        fleet_id: str | None = None,
        status: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[Resource], int]: ...
