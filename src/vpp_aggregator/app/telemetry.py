"""Telemetry ingest: validate each sample on its own, keep history, update live state.

Samples travel as columns (one numpy array per field) from the transport to the state, so a
10,000-sample batch costs a few vectorised passes rather than 10,000 Python objects.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from numpy.typing import NDArray

from vpp_aggregator.app.events import EventBus, TelemetryAccepted
from vpp_aggregator.app.messages import read_samples
from vpp_aggregator.app.ports import ResourceStore
from vpp_aggregator.domain.fleet_state import POWER_MARGIN, POWER_MARGIN_KW, FleetState
from vpp_aggregator.domain.instants import EARLIEST, OUT_OF_RANGE


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    reason: str


@dataclass(frozen=True, slots=True)
class TelemetryBatch:
    """Well-typed samples; `position` is each sample's index in the batch as it was sent."""

    resource_ids: list[str]
    timestamp_s: NDArray[np.float64]  # epoch seconds; NaN where the timestamp had no offset
    soc_pct: NDArray[np.float64]
    plugged_in: NDArray[np.bool_]
    power_kw: NDArray[np.float64]
    position: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.resource_ids)


def parse_samples(raw: list[Any]) -> tuple[TelemetryBatch, list[Rejection]]:
    """Samples as columns (`app/messages.TelemetrySample` says what a good one is); each
    malformed one is rejected with its reason."""
    positions, samples, refused = read_samples(raw)
    batch = TelemetryBatch(
        [s["resource_id"] for s in samples],
        np.fromiter((s["timestamp"] for s in samples), np.float64, len(samples)),
        np.fromiter((s["soc_pct"] for s in samples), np.float64, len(samples)),
        np.fromiter((s["plugged_in"] for s in samples), np.bool_, len(samples)),
        np.fromiter((s.get("power_kw") or 0.0 for s in samples), np.float64, len(samples)),
        np.asarray(positions, dtype=np.int64),
    )
    return batch, [Rejection(i, reason) for i, reason in refused]


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    applied: int  # of the accepted, how many were newer than what the live state held
    rejected: list[Rejection]


class TelemetryService:
    def __init__(
        self,
        store: ResourceStore,
        state: FleetState,
        clock: Callable[[], datetime],
        max_clock_skew_s: float,
        events: EventBus,
    ) -> None:
        self.store = store
        self.state = state
        self.clock = clock
        self.max_clock_skew_s = max_clock_skew_s
        self.events = events  # `TelemetryAccepted` after each batch: forecast history, Redis

    def ingest(self, batch: TelemetryBatch, pre_rejected: Sequence[Rejection] = ()) -> IngestResult:
        """Keep every good sample even when others in the batch are bad; history first, then state."""
        now = self.clock()
        now_ts = now.timestamp()
        rows, gens = self.state.history_rows(batch.resource_ids)  # the history reuses them
        ts, soc, power = batch.timestamp_s, batch.soc_pct, batch.power_kw
        aware = ~np.isnan(ts)
        checks = (
            (rows < 0, "unknown or deactivated resource_id"),
            (~aware, "timestamp has no time zone offset; send UTC, e.g. 2026-11-25T12:00:00Z"),
            (
                aware & (ts > now_ts + self.max_clock_skew_s),
                "timestamp is in the future beyond the allowed clock skew",
            ),
            (aware & (ts < EARLIEST.timestamp()), f"timestamp {OUT_OF_RANGE}"),
            (~((soc >= 0) & (soc <= 100)), "soc_pct must be between 0 and 100"),
            (~np.isfinite(power), "power_kw must be a finite number"),
            (
                ~self.state.power_within_limits(rows, power),
                "power_kw is beyond the resource's registered max_discharge_kw/max_charge_kw "
                f"(more than {POWER_MARGIN:.0%} over, plus {POWER_MARGIN_KW:g} kW of meter noise)",
            ),
        )
        good = np.ones(len(batch), dtype=bool)
        rejected = list(pre_rejected)
        for mask, reason in checks if any(m.any() for m, _ in checks) else ():
            hit = np.flatnonzero(mask & good)
            rejected.extend(Rejection(int(batch.position[i]), reason) for i in hit.tolist())
            good[hit] = False
        idx = np.flatnonzero(good)
        ids = [batch.resource_ids[i] for i in idx.tolist()]
        self.store.insert_samples(ids, ts[idx], soc[idx], batch.plugged_in[idx], power[idx], now)
        applied = self.state.apply_telemetry(
            rows[idx], ts[idx], soc[idx], batch.plugged_in[idx], power[idx], now
        )
        self.events.publish(
            TelemetryAccepted(
                ids,
                ts[idx],
                soc[idx],
                batch.plugged_in[idx],
                power[idx],
                rows=(rows[idx], gens[idx]),
            )
        )
        rejected.sort(key=lambda r: r.index)
        return IngestResult(accepted=int(idx.size), applied=applied, rejected=rejected)


class LatestSnapshotter:
    """Writes the newest sample of each changed resource to the store now and then.

    Ingest only appends history (cheap, sequential); this keeps a restart from having to find
    each resource's newest sample in that history. After a crash, start-up replays the history
    received since the last snapshot (minus a margin for ingests in flight), so nothing is lost.
    """

    REPLAY_MARGIN = timedelta(seconds=60)

    def __init__(
        self, store: ResourceStore, state: FleetState, clock: Callable[[], datetime]
    ) -> None:
        self.store = store
        self.state = state
        self.clock = clock

    def flush(self) -> int:
        at = self.clock()
        ids, rows, ts, soc, plugged, power = self.state.take_dirty()
        try:
            self.store.upsert_latest(ids, ts, soc, plugged, power, at)
        except Exception:
            self.state.mark_dirty(rows)
            raise
        return len(ids)

    def replay_since(self) -> datetime | None:
        last = self.store.last_snapshot_at()
        return None if last is None else last - self.REPLAY_MARGIN
