"""Demand-response events as last received (`app/dr_events.DrEventStore`)."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, bindparam, delete, insert, select

from vpp_aggregator.adapters.store.tables import dr_events

# Read on every dispatch tick (the site limits): built once.
_RECENT = select(dr_events).order_by(dr_events.c.received_at.desc()).limit(bindparam("limit"))


class DrEventRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def save(
        self, event_id: str, version: str, at: datetime, body: Any, read_as: dict[str, Any]
    ) -> None:
        """Keep this version (the caller checked it is not older than the stored one). A version
        received again keeps the time it was first received: its windows are read from then."""
        e = dr_events
        with self.engine.begin() as conn:
            old = conn.execute(
                select(e.c.version, e.c.received_at).where(e.c.event_id == event_id)
            ).first()
            if old is not None and old.version == version:
                at = old.received_at
            conn.execute(delete(e).where(e.c.event_id == event_id))
            conn.execute(
                insert(e).values(
                    event_id=event_id, version=version, received_at=at, body=body, read_as=read_as
                )
            )

    def get(self, event_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(dr_events).where(dr_events.c.event_id == event_id)).first()
        return dict(row._mapping) if row is not None else None

    def recent(self, limit: int = 50) -> builtins.list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(_RECENT, {"limit": limit})]
