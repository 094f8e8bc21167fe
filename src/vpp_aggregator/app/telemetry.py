"""Telemetry ingest: validate each sample on its own, keep history, update live state."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from vpp_aggregator.app.ports import ResourceStore
from vpp_aggregator.domain.fleet_state import FleetState


@dataclass(frozen=True, slots=True)
class Sample:
    resource_id: str
    timestamp: datetime
    soc_pct: float
    plugged_in: bool
    power_kw: float


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    reason: str


@dataclass(frozen=True, slots=True)
class IngestResult:
    accepted: int
    applied: int  # of the accepted, how many were newer than what the live state held
    rejected: list[Rejection]


class TelemetryService:
    def __init__(
        self,
        repo: ResourceStore,
        state: FleetState,
        clock: Callable[[], datetime],
        max_clock_skew_s: float,
    ) -> None:
        self.repo = repo
        self.state = state
        self.clock = clock
        self.max_clock_skew_s = max_clock_skew_s

    def ingest(
        self, samples: Sequence[Sample], pre_rejected: Sequence[Rejection] = ()
    ) -> IngestResult:
        """Accept every good sample even when others in the batch are bad.

        `pre_rejected` carries samples the transport already found malformed (their indexes are
        positions in the caller's original batch; `samples` holds the rest, in order).
        """
        now = self.clock()
        now_ts = now.timestamp()
        n = len(samples)
        rows = self.state.rows_of([s.resource_id for s in samples])
        aware = np.fromiter((s.timestamp.tzinfo is not None for s in samples), dtype=bool, count=n)
        ts = np.fromiter(
            (
                s.timestamp.timestamp() if s.timestamp.tzinfo is not None else np.nan
                for s in samples
            ),
            dtype=np.float64,
            count=n,
        )
        soc = np.fromiter((s.soc_pct for s in samples), dtype=np.float64, count=n)
        power = np.fromiter((s.power_kw for s in samples), dtype=np.float64, count=n)
        plugged = np.fromiter((s.plugged_in for s in samples), dtype=bool, count=n)

        reasons: dict[int, str] = {}
        checks = (
            (rows < 0, "unknown or deactivated resource_id"),
            (~aware, "timestamp has no time zone offset; send UTC, e.g. 2026-11-25T12:00:00Z"),
            (
                aware & (ts > now_ts + self.max_clock_skew_s),
                "timestamp is in the future beyond the allowed clock skew",
            ),
            (~((soc >= 0) & (soc <= 100)), "soc_pct must be between 0 and 100"),
            (~np.isfinite(power), "power_kw must be a finite number"),
        )
        for mask, reason in checks:
            for i in np.flatnonzero(mask).tolist():
                reasons.setdefault(i, reason)
        good = np.ones(n, dtype=bool)
        if reasons:
            good[list(reasons)] = False
        idx = np.flatnonzero(good)
        received = now
        self.repo.insert_samples(
            [
                {
                    "resource_id": samples[i].resource_id,
                    "ts": datetime.fromtimestamp(ts[i], tz=UTC),
                    "soc_pct": float(soc[i]),
                    "plugged_in": bool(plugged[i]),
                    "power_kw": float(power[i]),
                    "received_at": received,
                }
                for i in idx.tolist()
            ]
        )
        applied = self.state.apply_telemetry(
            rows[idx], ts[idx], soc[idx], plugged[idx], power[idx], now
        )
        rejected = list(pre_rejected)
        original = _original_positions(n, pre_rejected)
        rejected.extend(Rejection(original[i], r) for i, r in reasons.items())
        rejected.sort(key=lambda r: r.index)
        return IngestResult(accepted=int(idx.size), applied=applied, rejected=rejected)


def _original_positions(n: int, pre_rejected: Sequence[Rejection]) -> list[int]:
    """Map positions in the cleaned batch back to positions in the batch as sent."""
    if not pre_rejected:
        return list(range(n))
    skip = {r.index for r in pre_rejected}
    out: list[int] = []
    pos = 0
    while len(out) < n:
        if pos not in skip:
            out.append(pos)
        pos += 1
    return out
