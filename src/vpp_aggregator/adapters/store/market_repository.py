"""Market offers, awards with their settlement, the outbox for outgoing messages, and the
telemetry power history settlement measures."""

from __future__ import annotations

import builtins
import itertools
from collections.abc import Callable, Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Engine, Insert, Table, bindparam, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from vpp_aggregator.adapters.store.tables import (
    driver_stamps,
    epoch_seconds,
    makeup_hours,
    market_awards,
    market_offers,
    outbox,
    param_mark,
)
from vpp_aggregator.adapters.store.telemetry_daily import TelemetryDaily
from vpp_aggregator.app.outbound import Offer, Settlement

ID_BLOCK = 5_000  # resources per read of their samples: under every driver's parameter limit

# What every dispatch or market tick asks, built once (building costs about what running does).
_a, _m = market_awards, outbox
_TO_SETTLE = (
    select(_a)
    .where(_a.c.settled_at.is_(None), _a.c.interval_end <= bindparam("before"))
    .order_by(_a.c.interval_start)
)
_RUNNING = select(_a).where(
    _a.c.product == "energy",
    _a.c.status == "dispatched",
    _a.c.dispatch_id.is_not(None),
    _a.c.interval_start <= bindparam("end"),
    _a.c.interval_end >= bindparam("start"),
)
_RUNNING_ALL = _RUNNING.order_by(_a.c.interval_start)
_RUNNING_OF = _RUNNING.where(_a.c.aggregation_id == bindparam("agg")).order_by(_a.c.interval_start)
_QUEUED = (
    select(_m.c.message_id, _m.c.topic, _m.c.key, _m.c.payload)
    .where(_m.c.published_at.is_(None))
    .order_by(_m.c.message_id)
    .limit(bindparam("limit"))
    .with_for_update(skip_locked=True)
)


def _insert_skipping_stored(table: Table, dialect: str) -> Insert:
    """INSERT that leaves out rows whose primary key is already stored, also by a transaction
    running at once (the database waits for it to end); ON CONFLICT DO NOTHING is each
    database's own syntax, so one per database the service runs on."""
    keys = list(table.primary_key)
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing(index_elements=keys)
    return sqlite.insert(table).on_conflict_do_nothing(index_elements=keys)


class MarketRepository:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.daily = TelemetryDaily(engine)

    # ------------------------------------------------------------------ offers
    def add_offers(self, offers: Sequence[Offer], topic: str, at: datetime) -> builtins.list[Offer]:
        """Store offers not stored before and queue them for the market, in one transaction;
        returns the new ones (an interval already offered keeps its first offer).

        The insert itself skips an offer id already stored and says which rows it stored, and
        only those are queued: generations running at once (the market loop and
        `POST /market/offers/generate`) store and send each offer once and none fails. Looking
        first and inserting after let both insert, and the later one failed on the key (a 500)."""
        if not offers:
            return []
        o = market_offers
        rows = [
            {
                "offer_id": x["offer_id"],
                "aggregation_id": x["aggregation_id"],
                "interval_start": datetime.fromisoformat(x["interval_start"]),
                "interval_end": datetime.fromisoformat(x["interval_end"]),
                "payload": x,
                "created_at": at,
            }
            for x in offers
        ]
        rows.sort(key=lambda r: str(r["offer_id"]))  # one lock order for every caller (PostgreSQL)
        skip_stored = _insert_skipping_stored(o, self.engine.dialect.name)
        with self.engine.begin() as conn:
            stored = set(conn.execute(skip_stored.returning(o.c.offer_id), rows).scalars())
            new = [x for x in offers if x["offer_id"] in stored]
            if new:
                conn.execute(
                    insert(outbox),
                    [
                        {"topic": topic, "key": x["aggregation_id"], "payload": x, "created_at": at}
                        for x in new
                    ],
                )
        return new

    def offers(
        self, start: datetime, end: datetime, aggregation_id: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        o = market_offers
        q = select(o.c.payload).where(o.c.interval_start >= start, o.c.interval_start < end)
        if aggregation_id:
            q = q.where(o.c.aggregation_id == aggregation_id)
        with self.engine.connect() as conn:
            return [
                r.payload for r in conn.execute(q.order_by(o.c.interval_start, o.c.aggregation_id))
            ]

    def offers_at(
        self, aggregation_id: str, interval_start: datetime
    ) -> builtins.list[dict[str, Any]]:
        """The aggregation's offers for intervals starting then (day-ahead and real-time)."""
        o = market_offers
        q = select(o.c.payload).where(
            o.c.aggregation_id == aggregation_id, o.c.interval_start == interval_start
        )
        with self.engine.connect() as conn:
            return [dict(p) for p in conn.execute(q.order_by(o.c.offer_id)).scalars()]

    # ------------------------------------------------------------------ awards
    def add_award(self, award: dict[str, Any]) -> bool:
        """False when this award id was already received (a redelivery)."""
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(market_awards).values(**award))
            return True
        except IntegrityError:
            return False

    def get_award(self, award_id: str) -> dict[str, Any] | None:
        a = market_awards
        with self.engine.connect() as conn:
            row = conn.execute(select(a).where(a.c.award_id == award_id)).mappings().first()
            return dict(row) if row else None

    def awards_to_settle(self, before: datetime) -> builtins.list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(_TO_SETTLE, {"before": before}).mappings()]

    def dispatched_awards(
        self, start: datetime, end: datetime, aggregation_id: str | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Energy awards with a dispatch running for them that overlap [start, end]."""
        q, args = (
            (_RUNNING_ALL, {}) if aggregation_id is None else (_RUNNING_OF, {"agg": aggregation_id})
        )
        with self.engine.connect() as conn:
            rows = conn.execute(q, {"start": start, "end": end, **args}).mappings()
            return [dict(r) for r in rows]

    def regulation_awarded(self, at: datetime) -> dict[str, float]:
        """Regulation kW awarded to each aggregation for the interval under way at `at`."""
        a = market_awards
        q = select(a.c.aggregation_id, a.c.awarded_kw).where(
            a.c.product == "regulation",
            a.c.interval_start <= at,
            a.c.interval_end > at,
            a.c.status.in_(("regulating", "dispatched")),
        )
        out: dict[str, float] = {}
        with self.engine.connect() as conn:
            for node, kw in conn.execute(q):
                out[node] = out.get(node, 0.0) + float(kw)
        return out

    def awarded_in(
        self, aggregation_id: str, start: datetime, end: datetime, product: str
    ) -> builtins.list[tuple[str, float, datetime]]:
        """The aggregation's awards of a product that overlap [start, end) and were taken
        (not expired or rejected): their ids, kW and when they came."""
        a = market_awards
        q = select(a.c.award_id, a.c.awarded_kw, a.c.received_at).where(
            a.c.aggregation_id == aggregation_id,
            a.c.product == product,
            a.c.interval_start < end,
            a.c.interval_end > start,
            a.c.status.in_(("dispatched", "regulating", "settled")),
        )
        with self.engine.connect() as conn:
            return [(r[0], float(r[1]), r[2]) for r in conn.execute(q)]

    def award_spans(
        self, aggregation_id: str, start: datetime, end: datetime
    ) -> builtins.list[tuple[datetime, datetime, float]]:
        """The aggregation's awards that ran for something (a dispatch was made) and overlap
        [start, end): their intervals and kW. Their days are event days to baselines."""
        a = market_awards
        q = select(a.c.interval_start, a.c.interval_end, a.c.awarded_kw).where(
            a.c.aggregation_id == aggregation_id,
            a.c.interval_start < end,
            a.c.interval_end > start,
            a.c.dispatch_id.is_not(None),
            a.c.product == "energy",
        )
        with self.engine.connect() as conn:
            return [(r[0], r[1], float(r[2])) for r in conn.execute(q.order_by(a.c.interval_start))]

    # ------------------------------------------------------------------ make-up (app/makeup)
    def add_makeup(self, rows: Sequence[tuple[str, date, int, float]]) -> None:
        """Add kWh made up to (aggregation, local day, hour of day): a row stored already, by
        this process or another, grows by it."""
        if not rows:  # noted every tick an award runs; an hour's sum is stored once it is over
            return
        t = makeup_hours
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        ins = dialect.insert(t)
        stmt = ins.on_conflict_do_update(
            index_elements=list(t.primary_key), set_={"kwh": t.c.kwh + ins.excluded.kwh}
        )
        values = [
            {"aggregation_id": a, "day": d.isoformat(), "hour": h, "kwh": kwh}
            for a, d, h, kwh in rows
        ]
        with self.engine.begin() as conn:
            conn.execute(stmt, values)

    def makeup_days(self, aggregation_id: str, days: int) -> dict[date, NDArray[np.float64]]:
        """The aggregation's last `days` days with an award noted: kWh made up by local hour."""
        t = makeup_hours
        mine = t.c.aggregation_id == aggregation_id
        last = select(t.c.day).where(mine).distinct().order_by(t.c.day.desc()).limit(days)
        q = select(t.c.day, t.c.hour, t.c.kwh).where(mine, t.c.day.in_(last.scalar_subquery()))
        out: dict[date, NDArray[np.float64]] = {}
        with self.engine.connect() as conn:
            for day, hour, kwh in conn.execute(q):
                out.setdefault(date.fromisoformat(day), np.zeros(24))[int(hour)] += float(kwh)
        return dict(sorted(out.items()))

    def settle(self, award_id: str, settlement: Settlement, topic: str, at: datetime) -> None:
        """Store the settlement, with the award's final status and reason, and queue it for the
        market gateway, in one transaction."""
        a = market_awards
        with self.engine.begin() as conn:
            conn.execute(
                update(a)
                .where(a.c.award_id == award_id)
                .values(
                    settlement=settlement,
                    settled_at=at,
                    status=settlement["status"],
                    reason=settlement["reason"],
                )
            )
            conn.execute(
                insert(outbox).values(
                    topic=topic, key=settlement["aggregation_id"], payload=settlement, created_at=at
                )
            )

    def settlements(self, start: datetime, end: datetime) -> builtins.list[dict[str, Any]]:
        a = market_awards
        q = select(a).where(a.c.interval_start >= start, a.c.interval_start < end)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(q.order_by(a.c.interval_start)).mappings()]

    # ------------------------------------------------------------------ outbox
    def relay(
        self,
        send: Callable[[builtins.list[tuple[str, str, dict[str, Any]]]], builtins.list[bool]],
        at: datetime,
        limit: int = 5_000,
    ) -> int:
        """Send queued messages in order (rows held locked meanwhile); mark what was delivered."""
        m = outbox
        with self.engine.begin() as conn:
            rows = conn.execute(_QUEUED, {"limit": limit}).all()
            if not rows:
                return 0
            delivered = send([(r.topic, r.key, r.payload) for r in rows])
            done = [r.message_id for r, ok in zip(rows, delivered, strict=True) if ok]
            if done:
                conn.execute(update(m).where(m.c.message_id.in_(done)).values(published_at=at))
            return len(done)

    # ------------------------------------------------------------------ measurement
    def power_history(
        self, resource_ids: Sequence[str], start: datetime, end: datetime
    ) -> dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]]:
        """Per resource, its samples' times (epoch s) and power (kW) in [start, end), sorted.

        Straight through the driver, as columns: settling a day's awards reads every member's
        samples of the day, and building SQLAlchemy rows for them cost twice the query."""
        dialect = self.engine.dialect.name
        mark = param_mark(dialect)
        lo, hi = driver_stamps(np.array([start.timestamp(), end.timestamp()]), dialect)
        out = {rid: (np.zeros(0), np.zeros(0)) for rid in resource_ids}
        wanted = list(resource_ids)
        with self.engine.connect() as conn:
            for a in range(0, len(wanted), ID_BLOCK):
                ids = wanted[a : a + ID_BLOCK]
                sql = (
                    "SELECT resource_id, ts, power_kw FROM telemetry_samples WHERE ts >= "
                    f"{mark} AND ts < {mark} AND resource_id IN ({', '.join([mark] * len(ids))})"
                    " ORDER BY resource_id, ts"
                )
                rows = conn.exec_driver_sql(sql, (lo, hi, *ids)).cursor.fetchall()
                if not rows:
                    continue
                got, stamps, kw = zip(*rows, strict=True)
                ts = epoch_seconds(stamps)
                power = np.array(kw, dtype=np.float64)
                keys = np.array(got)
                cuts = [0, *(np.flatnonzero(keys[1:] != keys[:-1]) + 1).tolist(), keys.size]
                for i, j in itertools.pairwise(cuts):
                    out[str(keys[i])] = (ts[i:j], power[i:j])
        return out

    def received_since(
        self, since: datetime, start: datetime, end: datetime
    ) -> list[tuple[str, float]]:
        """The resource and time (epoch s) of each sample received at or after `since` that
        was taken in [start, end): what came late for days already measured.

        On SQLite through the index on reception: its planner, without statistics, scanned
        the whole day's samples by time instead (50 ms a settlement at 126 devices)."""
        dialect = self.engine.dialect.name
        mark = param_mark(dialect)
        hint = " INDEXED BY ix_telemetry_samples_received_at" if dialect == "sqlite" else ""
        bounds = driver_stamps(
            np.array([since.timestamp(), start.timestamp(), end.timestamp()]), dialect
        )
        sql = (
            f"SELECT resource_id, ts FROM telemetry_samples{hint} "
            f"WHERE received_at >= {mark} AND ts >= {mark} AND ts < {mark}"
        )
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(sql, tuple(bounds)).cursor.fetchall()
        if not rows:
            return []
        ids, stamps = zip(*rows, strict=True)
        return list(zip(ids, epoch_seconds(stamps).tolist(), strict=True))

    def rolled_through(self) -> date | None:
        """Days before this one are measured from their stored five-minute series."""
        return self.daily.rolled_through()

    def daily_energy(
        self, resource_ids: Sequence[str], first: date, last: date, interval_s: float
    ) -> dict[str, tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]]:
        return self.daily.daily_energy(resource_ids, first, last, interval_s)
