"""The audit log: appended to, read back, never changed."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert, select

from vpp_aggregator.adapters.store.tables import audit_log


class AuditRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def append(self, entry: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(audit_log).values(**entry))

    def entries(
        self,
        *,
        since: datetime | None = None,
        action: str | None = None,
        actor: str | None = None,
        fleet_id: str | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> builtins.list[dict[str, Any]]:
        a = audit_log
        q = select(a)
        if since is not None:
            q = q.where(a.c.at >= since)
        if action:
            q = q.where(a.c.action == action)
        if actor:
            q = q.where(a.c.actor == actor)
        if fleet_id:
            q = q.where(a.c.fleet_id == fleet_id)
        if before_id is not None:
            q = q.where(a.c.entry_id < before_id)
        with self.engine.connect() as conn:
            rows = conn.execute(q.order_by(a.c.entry_id.desc()).limit(limit)).mappings()
            return [{**dict(r), "at": r["at"].isoformat()} for r in rows]
