"""Live state shared through Redis, so API replicas and workers answer from the same fleet.

Whoever ingests telemetry (a worker from Kafka, a replica from POST /telemetry) writes each
resource's newest sample to a hash and the batch to a stream; every process follows the stream
into its own in-memory state (bootstrapping from the hash), so capacity reads stay in-process
and fast. Registry changes travel on a second stream (the record itself is in the database).
The market gateway's keys (`vpp:capacity:available`, `vpp:capacity:regional`) are kept current.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import orjson
import redis
from numpy.typing import NDArray

from vpp_aggregator.adapters.cache import redis_wire
from vpp_aggregator.app.aggregator import Aggregator
from vpp_aggregator.app.results import CapacityView

log = logging.getLogger(__name__)
STREAM_MAXLEN = 100_000  # batches kept for followers that fall behind (approximate trim)

ApplySamples = Callable[
    [list[str], NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64]],
    None,
]


class RedisSharedState:
    def __init__(self, url: str, prefix: str = "vpp") -> None:
        # redis-py's stubs type replies as unions of every RESP shape: read them as they come.
        self.client: Any = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self.prefix = prefix
        self.source = uuid.uuid4().hex[:12]  # this process: it skips its own stream entries
        self.latest_key = f"{prefix}:telemetry:latest"
        self.changes_key = f"{prefix}:telemetry:changes"
        self.registry_key = f"{prefix}:registry:changes"
        self.available_key = f"{prefix}:capacity:available"
        self.regional_key = f"{prefix}:capacity:regional"
        self.last_error: str | None = None

    def publish_samples(
        self,
        resource_ids: Sequence[str],
        timestamp_s: NDArray[np.float64],
        soc_pct: NDArray[np.float64],
        plugged_in: NDArray[np.bool_],
        power_kw: NDArray[np.float64],
    ) -> None:
        if not len(resource_ids):
            return
        ts, soc = timestamp_s.tolist(), soc_pct.tolist()
        plugged, power = plugged_in.tolist(), power_kw.tolist()
        # The newest sample per resource for a follower's bootstrap: `[ts, soc, plugged, power]`
        # with plugged as 1.0/0.0 (`_columns` reads both), written in RESP by hand (`redis_wire`).
        latest = redis_wire.hset(
            self.latest_key,
            resource_ids,
            redis_wire.json_rows(timestamp_s, soc_pct, plugged_in, power_kw),
        )
        batch = orjson.dumps(
            {
                "src": self.source,
                "ids": list(resource_ids),
                "ts": ts,
                "soc": soc,
                "plugged": plugged,
                "power": power,
            }
        )
        # `src` beside the batch too: a follower skips its own entries without decoding them.
        change = redis_wire.command(
            "XADD", self.changes_key, "MAXLEN", "~", str(STREAM_MAXLEN), "*",
            "src", self.source, "b", batch,
        )  # fmt: skip
        redis_wire.send(self.client, latest, change)

    def publish_registry_changes(self, resource_ids: Sequence[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for rid in resource_ids:
            pipe.xadd(
                self.registry_key, {"id": rid, "src": self.source}, maxlen=100_000, approximate=True
            )
        pipe.execute()

    def write_capacity(self, total_discharge_kwh: float, regional: dict[str, Any]) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.set(self.available_key, f"{total_discharge_kwh:.3f}")
        pipe.set(self.regional_key, orjson.dumps(regional))
        pipe.execute()

    def ping(self) -> None:
        self.client.ping()


def _columns(
    rows: list[tuple[str, list[Any]]],
) -> tuple[
    list[str], NDArray[np.float64], NDArray[np.float64], NDArray[np.bool_], NDArray[np.float64]
]:
    ids = [r for r, _ in rows]
    values = np.array([v for _, v in rows], dtype=np.float64).reshape(-1, 4)
    return ids, values[:, 0], values[:, 1], values[:, 2].astype(bool), values[:, 3]


def _stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class RedisFollower:
    """Keeps this process's live state in step with what every other process ingests."""

    def __init__(
        self,
        shared: RedisSharedState,
        apply_samples: ApplySamples,
        reload_resource: Callable[[str], None],
    ) -> None:
        self.shared = shared
        self.apply_samples = apply_samples
        self.reload_resource = reload_resource
        self._changes_id: str | None = None
        self._registry_id = "$"
        self.last_ok = 0.0  # monotonic time of the last successful read
        self.last_error: str | None = None
        self.applied = 0
        self.reloads = 0  # full reloads after falling behind the stream
        self._checked_at = 0.0
        self._source = shared.source.encode()

    def bootstrap(self) -> int:
        """Every resource's newest sample from the hash; then follow the stream from before it."""
        client = self.shared.client
        newest = client.xrevrange(self.shared.changes_key, count=1)
        self._changes_id = newest[0][0].decode() if newest else "0-0"
        newest_reg = client.xrevrange(self.shared.registry_key, count=1)
        self._registry_id = newest_reg[0][0].decode() if newest_reg else "0-0"
        chunk: list[tuple[str, list[Any]]] = []
        count = 0
        for rid, raw in client.hscan_iter(self.shared.latest_key, count=5000):
            chunk.append((rid.decode(), orjson.loads(raw)))
            if len(chunk) >= 20_000:
                self.apply_samples(*_columns(chunk))
                count += len(chunk)
                chunk.clear()
        if chunk:
            self.apply_samples(*_columns(chunk))
            count += len(chunk)
        self.last_ok = time.monotonic()
        return count

    def poll_once(self, block_ms: int = 500) -> int:
        if self._changes_id is None or self._fell_behind():
            self.bootstrap()
        client = self.shared.client
        streams = {
            self.shared.changes_key: self._changes_id,
            self.shared.registry_key: self._registry_id,
        }
        got = client.xread(streams, count=200, block=block_ms) or []
        applied = 0
        for key, entries in got:
            name = key.decode()
            for entry_id, fields in entries:
                if name == self.shared.registry_key:
                    self._registry_id = entry_id.decode()
                    if fields.get(b"src", b"").decode() != self.shared.source:
                        self.reload_resource(fields[b"id"].decode())
                    continue
                self._changes_id = entry_id.decode()
                if fields.get(b"src") == self._source:
                    continue  # applied when this process ingested it
                batch = orjson.loads(fields[b"b"])
                if batch["src"] == self.shared.source:
                    continue  # applied when this process ingested it
                self.apply_samples(
                    batch["ids"],
                    np.asarray(batch["ts"], dtype=np.float64),
                    np.asarray(batch["soc"], dtype=np.float64),
                    np.asarray(batch["plugged"], dtype=bool),
                    np.asarray(batch["power"], dtype=np.float64),
                )
                applied += len(batch["ids"])
        self.applied += applied
        self.last_ok = time.monotonic()
        self.last_error = None
        return applied

    def _fell_behind(self) -> bool:
        """Whether the stream no longer holds the entries after ours: trimmed past our position
        (we were more than STREAM_MAXLEN batches behind) or Redis came back empty. Reading on
        would skip the gap, so the caller reloads every resource's newest sample from the hash.
        Checked at most once a second."""
        now = time.monotonic()
        if now - self._checked_at < 1.0 or self._changes_id in (None, "0-0"):
            return False
        self._checked_at = now
        try:
            first = self.shared.client.xinfo_stream(self.shared.changes_key)["first-entry"]
        except redis.ResponseError:  # no stream (yet): nothing to miss
            return False
        if not first or _stream_id(first[0].decode()) <= _stream_id(self._changes_id or "0-0"):
            return False
        log.warning(
            "the shared change stream starts after this process's position %s; reloading every "
            "resource's newest sample",
            self._changes_id,
        )
        self.reloads += 1
        return True

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.poll_once()
            except redis.RedisError as exc:  # answer from the last known state meanwhile
                if self.last_error is None:
                    log.warning("Redis unavailable (%s); serving the last known state", exc)
                self.last_error = f"{type(exc).__name__}: {exc}"
                stop.wait(1.0)

    def stale_seconds(self) -> float | None:
        return None if self.last_ok == 0.0 else time.monotonic() - self.last_ok


class RedisParts:
    """The process's Redis side: sharing what it ingests, following what others ingest, and
    keeping the market gateway's capacity keys current."""

    def __init__(self, shared: RedisSharedState, follower: RedisFollower) -> None:
        self.shared = shared
        self.follower = follower
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def connect(cls, url: str, prefix: str, aggregator: Aggregator) -> RedisParts:
        """What others share comes in here; what this process shares goes out through the
        handlers `bootstrap.subscribe_handlers` gives `shared`."""
        shared = RedisSharedState(url, prefix)
        follower = RedisFollower(
            shared, aggregator.apply_shared_samples, aggregator.registry.reload
        )
        return cls(shared, follower)

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self.follower.run, args=(self._stop,), name="redis-follower", daemon=True
        )
        self._thread.start()

    def write_capacity(self, capacity: CapacityView) -> None:
        """`vpp:capacity:available`: total discharge kWh; `vpp:capacity:regional`: per grid node."""
        regional = {
            node: {
                "discharge_kw": f["discharge"]["kw"],
                "discharge_kwh": f["discharge"]["kwh"],
                "charge_kw": f["charge"]["kw"],
                "charge_kwh": f["charge"]["kwh"],
                "meets_minimum": f["meets_minimum"],
                "as_of": capacity["as_of"],
            }
            for node, f in capacity["by_grid_node"].items()
        }
        self.shared.write_capacity(float(capacity["discharge"]["kwh"]), regional)

    def status(self) -> dict[str, Any]:
        try:
            self.shared.ping()
            ok, detail = True, self.follower.last_error
        except redis.RedisError as exc:
            ok, detail = False, f"{type(exc).__name__}: {exc}"
        stale = self.follower.stale_seconds()
        return {
            "ok": ok and self.follower.last_error is None,
            "detail": detail,
            "state_age_seconds": None if stale is None else round(stale, 1),
        }

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
