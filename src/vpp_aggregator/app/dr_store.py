"""Where demand-response events are kept as last received, and how their dispatches are marked."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

SOURCE = "dr_event"  # the `source` of every dispatch a demand-response event makes


class DrEventStore(Protocol):
    def save(
        self, event_id: str, version: str, at: datetime, body: Any, read_as: dict[str, Any]
    ) -> None: ...
    def get(self, event_id: str) -> dict[str, Any] | None: ...
    def recent(self, limit: int = 50) -> list[dict[str, Any]]: ...
