"""Persistence of dispatches, their revisions and the control-command outbox."""

from __future__ import annotations

import builtins
import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    bindparam,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from vpp_aggregator.adapters.store.dispatch_rows import (
    allocation_rows,
    dispatch_record,
    dispatch_row,
)
from vpp_aggregator.adapters.store.tables import (
    command_refusals,
    control_commands,
    dispatch_allocations,
    dispatch_revisions,
    dispatches,
)
from vpp_aggregator.app.dispatch_records import (
    OPEN_STATUSES,
    RECHARGE_SOURCE,
    AllocationRecord,
    DispatchRecord,
    DispatchStatus,
    NotFollowedHereError,
    PlanningBusyError,
    RevisionRecord,
)
from vpp_aggregator.app.outbound import V2GCommand


class DuplicateIdempotencyKeyError(Exception):
    """Another dispatch already holds that idempotency key."""


# Key of the PostgreSQL advisory lock that serialises planning across processes (any constant
# shared by every process of one deployment; "VPPD" in ASCII).
PLANNING_LOCK_KEY = 0x56505044

# What every dispatch tick asks, built once: building a statement costs SQLAlchemy about as
# much as running it on SQLite, and the follow-through runs these every few seconds.
_d, _r, _cmd = dispatches, command_refusals, control_commands
_MINE = and_(_d.c.owner == bindparam("me"), _d.c.dispatch_id.in_(bindparam("ids", expanding=True)))
_LEASE = update(_d).where(_MINE).values(lease_until=bindparam("until")).returning(_d.c.dispatch_id)
_FREE = and_(
    # Each status its own parameter: an IN list is expanded anew at every run.
    or_(*(_d.c.status == s.value for s in OPEN_STATUSES)),
    _d.c.end_at > bindparam("now"),
    or_(_d.c.owner.is_(None), _d.c.lease_until.is_(None), _d.c.lease_until <= bindparam("now")),
)
_ANY_FREE = select(_d.c.dispatch_id).where(_FREE).limit(1)
_CLAIM = (
    update(_d)
    .where(_FREE)
    .values(owner=bindparam("me"), lease_until=bindparam("until"))
    .returning(_d.c.dispatch_id)
)
_TAKE_REFUSALS = (
    update(_r)
    .where(_r.c.dispatch_id.in_(bindparam("ids", expanding=True)), _r.c.handled_at.is_(None))
    .values(handled_at=bindparam("at"))
    .returning(_r.c.refusal_id, _r.c.dispatch_id, _r.c.resource_id, _r.c.reason)
)
_UNPUBLISHED = (
    select(_cmd.c.command_id, _cmd.c.payload)
    .where(_cmd.c.published_at.is_(None))
    .order_by(_cmd.c.command_id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)


class DispatchRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._held = threading.local()

    @contextlib.contextmanager
    def planning_lock(self, timeout_s: float = 10.0) -> Iterator[None]:
        """Only one process of the deployment plans at a time, so two processes never hand the
        same resource to two dispatches. On SQLite there is one process, whose own lock does.

        Waits at most `timeout_s` (PlanningBusyError after), on a connection in autocommit so
        no transaction idles while the lock is held; re-entrant within a thread."""
        depth: int = getattr(self._held, "depth", 0)
        if self.engine.dialect.name != "postgresql" or depth:
            self._held.depth = depth + 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        deadline = time.monotonic() + timeout_s
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            take = text("SELECT pg_try_advisory_lock(:k)")
            while not conn.execute(take, {"k": PLANNING_LOCK_KEY}).scalar_one():
                if time.monotonic() >= deadline:
                    raise PlanningBusyError(
                        f"another process has been planning for over {timeout_s:g} s"
                    )
                time.sleep(0.02)
            self._held.depth = 1
            try:
                yield
            finally:
                self._held.depth = 0
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": PLANNING_LOCK_KEY})

    def adopt(
        self, owner: str, followed: Sequence[str], now: datetime, until: datetime
    ) -> tuple[builtins.set[str], builtins.list[DispatchRecord]]:
        """In one transaction: extend `owner`'s claim on the dispatches it follows (returning
        those it still holds), and make open dispatches nobody follows (no claim, or a lapsed
        one) its own (returning them)."""
        d, mine = dispatches, {"me": owner, "ids": list(followed), "until": until}
        with self.engine.begin() as conn:
            kept = set(conn.execute(_LEASE, mine).scalars()) if followed else set()
            # Looked for first: an update that finds nothing still takes the write lock.
            if conn.execute(_ANY_FREE, {"now": now}).first() is None:
                return kept, []
            ids = list(conn.execute(_CLAIM, {"now": now, "me": owner, "until": until}).scalars())
            if not ids:
                return kept, []
            rows = conn.execute(select(d).where(d.c.dispatch_id.in_(ids)))
            return kept, [self._with_allocations(conn, dispatch_record(r)) for r in rows]

    def take_over(self, dispatch_id: str, owner: str, until: datetime) -> DispatchRecord | None:
        """This process follows the dispatch from now on (the former follower lets go when it
        next renews); returns it as stored."""
        d = dispatches
        with self.engine.begin() as conn:
            conn.execute(
                update(d)
                .where(d.c.dispatch_id == dispatch_id)
                .values(owner=owner, lease_until=until)
            )
            row = conn.execute(select(d).where(d.c.dispatch_id == dispatch_id)).first()
            return self._with_allocations(conn, dispatch_record(row)) if row else None

    def release(self, owner: str, at: datetime) -> None:
        """On a clean stop: let another process take over at once instead of after the lease."""
        d = dispatches
        with self.engine.begin() as conn:
            conn.execute(update(d).where(d.c.owner == owner).values(lease_until=at))

    def add_refusal(self, dispatch_id: str, resource_id: str, reason: str, at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(command_refusals).values(
                    dispatch_id=dispatch_id,
                    resource_id=resource_id,
                    reason=reason[:200],
                    received_at=at,
                )
            )

    def take_refusals(
        self, dispatch_ids: Sequence[str], at: datetime
    ) -> builtins.list[tuple[str, str, str]]:
        """Unhandled refusals for these dispatches, marked handled: (dispatch, resource, reason)."""
        if not dispatch_ids:
            return []
        with self.engine.begin() as conn:
            rows = conn.execute(_TAKE_REFUSALS, {"ids": list(dispatch_ids), "at": at}).all()
        return [(r.dispatch_id, r.resource_id, r.reason) for r in sorted(rows)]

    def held_resources(
        self,
        start: datetime,
        end: datetime,
        exclude: str | None = None,
        recharges_from: datetime | None = None,
    ) -> builtins.list[str]:
        """Resources of every open dispatch overlapping [start, end], whichever process runs it."""
        d, a = dispatches, dispatch_allocations
        conds = [
            d.c.status.in_([s.value for s in OPEN_STATUSES]),
            d.c.end_at > start,
            d.c.start_at < end,
        ]
        conds += [d.c.dispatch_id != exclude] if exclude is not None else []
        if recharges_from is not None:  # recharges beginning after it give way
            conds.append(or_(d.c.source != RECHARGE_SOURCE, d.c.start_at <= recharges_from))
        joined = a.join(d, and_(a.c.dispatch_id == d.c.dispatch_id, a.c.revision == d.c.revision))
        with self.engine.connect() as conn:
            if self.engine.dialect.name == "postgresql":  # one row: no per-row cost at scale
                agg = select(func.array_agg(a.c.resource_id.distinct())).select_from(joined)
                return list(conn.execute(agg.where(and_(*conds))).scalar_one() or [])
            q = select(a.c.resource_id).distinct().select_from(joined).where(and_(*conds))
            return list(conn.execute(q).scalars())

    def insert(
        self,
        record: DispatchRecord,
        commands: Sequence[V2GCommand],
        at: datetime,
        owner: str | None = None,
        lease_until: datetime | None = None,
    ) -> None:
        """The dispatch, its allocations, its first revision and its commands: one transaction."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(dispatches).values(
                        **dispatch_row(record), owner=owner, lease_until=lease_until
                    )
                )
                self._write_revision(conn, record, "created", {}, commands, at)
        except IntegrityError as exc:
            raise DuplicateIdempotencyKeyError(record.idempotency_key) from exc

    def revise(
        self,
        record: DispatchRecord,
        reason: str,
        detail: dict[str, Any],
        commands: Sequence[V2GCommand],
        at: datetime,
        owner: str | None = None,
    ) -> None:
        """Store revision `record.revision`, only over the one before it and, given an `owner`,
        only while that process still follows the dispatch (NotFollowedHereError otherwise)."""
        d = dispatches
        with self.engine.begin() as conn:
            values = dispatch_row(record)
            values.pop("dispatch_id")
            conds = [d.c.dispatch_id == record.dispatch_id, d.c.revision == record.revision - 1]
            if owner is not None:
                conds.append(d.c.owner == owner)
            if conn.execute(update(d).where(and_(*conds)).values(**values)).rowcount != 1:
                raise NotFollowedHereError(record.dispatch_id)
            self._write_revision(conn, record, reason, detail, commands, at)

    def _write_revision(
        self,
        conn: Connection,
        record: DispatchRecord,
        reason: str,
        detail: dict[str, Any],
        commands: Sequence[V2GCommand],
        at: datetime,
    ) -> None:
        rows = allocation_rows(record)
        if rows:
            conn.execute(insert(dispatch_allocations), rows)
        conn.execute(
            insert(dispatch_revisions).values(
                dispatch_id=record.dispatch_id,
                revision=record.revision,
                at=at,
                reason=reason,
                detail=detail,
            )
        )
        if commands:
            conn.execute(
                insert(control_commands),
                [
                    {
                        "dispatch_id": record.dispatch_id,
                        "revision": record.revision,
                        "resource_id": c["resource_id"],
                        "charge_point_id": c["chargePointId"],
                        "payload": c,
                        "created_at": at,
                        "published_at": None,
                    }
                    for c in commands
                ],
            )

    def set_status(self, dispatch_id: str, status: DispatchStatus, at: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(dispatches)
                .where(dispatches.c.dispatch_id == dispatch_id)
                .values(status=status.value, updated_at=at)
            )

    def find_by_key(self, key: str) -> DispatchRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(dispatches).where(dispatches.c.idempotency_key == key)
            ).first()
            return self._with_allocations(conn, dispatch_record(row)) if row else None

    def get(self, dispatch_id: str) -> DispatchRecord | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(dispatches).where(dispatches.c.dispatch_id == dispatch_id)
            ).first()
            return self._with_allocations(conn, dispatch_record(row)) if row else None

    def _with_allocations(self, conn: Connection, record: DispatchRecord) -> DispatchRecord:
        a = dispatch_allocations
        rows = conn.execute(
            select(a)
            .where(and_(a.c.dispatch_id == record.dispatch_id, a.c.revision == record.revision))
            .order_by(a.c.resource_id)
        )
        record.allocations = [
            AllocationRecord(
                r.resource_id,
                r.resource_type,
                r.charge_point_id,
                r.setpoint_kw,
                r.schedule_start,
                r.schedule_kw,
                r.start_soc_pct,
                r.expected_end_soc_pct,
                r.binding_constraint,
            )
            for r in rows
        ]
        return record

    def list(
        self,
        *,
        status: Sequence[str] = (),
        source: str | None = None,
        reference: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[builtins.list[DispatchRecord], int]:
        conds: builtins.list[ColumnElement[bool]] = []
        if reference is not None:
            conds.append(dispatches.c.reference == reference)
        if status:
            conds.append(dispatches.c.status.in_(list(status)))
        if source:
            conds.append(dispatches.c.source == source)
        q = select(dispatches).order_by(dispatches.c.created_at.desc()).limit(limit).offset(offset)
        cq = select(func.count()).select_from(dispatches)
        if conds:
            q, cq = q.where(and_(*conds)), cq.where(and_(*conds))
        with self.engine.connect() as conn:
            return [dispatch_record(r) for r in conn.execute(q)], int(conn.execute(cq).scalar_one())

    def open_dispatches(self, source: str) -> builtins.list[DispatchRecord]:
        """The open dispatches (scheduled, active, partial) of `source`, newest first, in one
        query, as summaries: without their allocations, plan or shortfall reasons (the columns
        that cost the most to read; `get` has them)."""
        d = dispatches
        heavy = {"plan_kw", "shortfall_reasons"}
        q = (
            select(*(c for c in d.c if c.name not in heavy))
            .where(and_(d.c.status.in_([s.value for s in OPEN_STATUSES]), d.c.source == source))
            .order_by(d.c.created_at.desc())
        )
        with self.engine.connect() as conn:
            return [dispatch_record(r, summary=True) for r in conn.execute(q)]

    def revisions(self, dispatch_id: str) -> builtins.list[RevisionRecord]:
        r = dispatch_revisions
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(r).where(r.c.dispatch_id == dispatch_id).order_by(r.c.revision)
            )
            return [RevisionRecord(x.revision, x.at, x.reason, x.detail) for x in rows]

    def relay_commands(
        self,
        send: Callable[[builtins.list[dict[str, Any]]], builtins.list[bool]],
        at: datetime,
        limit: int = 10_000,
    ) -> int:
        """Send unpublished commands in order and mark what was delivered, holding the rows
        locked meanwhile so two relays (two processes) never send the same ones."""
        c = control_commands
        with self.engine.begin() as conn:
            rows = conn.execute(_UNPUBLISHED, {"limit": limit}).all()
            if not rows:
                return 0
            delivered = send([r.payload for r in rows])
            done = [r.command_id for r, ok in zip(rows, delivered, strict=True) if ok]
            if done:
                conn.execute(update(c).where(c.c.command_id.in_(done)).values(published_at=at))
            return len(done)
