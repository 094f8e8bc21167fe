"""Bringing one process's live state up at start-up, and keeping an image of it for the next start.

With a stored image: restore it (columns as they are), then take in the registry rows changed
and the telemetry received since it was taken (minus a margin for writes in flight). Without
one (first start, another format): rebuild from the registry, the latest-sample snapshot and the
history received since. Until done the process says it is loading (`progress`), and the API
answers 503 rather than figures from a half-loaded fleet.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Protocol

import numpy as np

from vpp_aggregator.app.ports import ResourceStore, StoredSample
from vpp_aggregator.app.telemetry import LatestSnapshotter
from vpp_aggregator.domain.fleet_image import FleetImage, restore_image, take_image
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.resources import Resource

log = logging.getLogger(__name__)
CHUNK = 50_000


class StateImages(Protocol):
    """Where images of the live state are kept (shared by every process of the deployment)."""

    def save(self, image: FleetImage) -> int: ...
    def load(self) -> FleetImage | None: ...
    def resources_changed_since(self, since: datetime) -> Iterable[Resource]: ...


class LoadProgress:
    """How far the live state's load is; `ready` once it is complete."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.phase = "not started"
        self.done = 0
        self.total: int | None = None
        self.failed: str | None = None

    def step(self, phase: str, done: int = 0, total: int | None = None) -> None:
        self.phase, self.done, self.total = phase, done, total

    def detail(self) -> str:
        if self.ready.is_set():
            return "loaded"
        if self.failed:
            return f"loading live state failed: {self.failed}"
        of = f" of {self.total:,}" if self.total is not None else ""
        return f"loading live state: {self.phase}: {self.done:,}{of}"


class LiveStateLoader:
    REPLAY_MARGIN = LatestSnapshotter.REPLAY_MARGIN

    def __init__(
        self,
        state: FleetState,
        store: ResourceStore,
        images: StateImages | None,
        snapshotter: LatestSnapshotter,
        clock: Callable[[], datetime],
        windows_minutes: Iterable[float] = (60.0,),
    ) -> None:
        """`windows_minutes`: the capacity windows the process reads (the API's, the offers'),
        whose views are built while loading rather than by their first reader."""
        self.state = state
        self.windows_minutes = tuple(dict.fromkeys(float(w) for w in windows_minutes))
        self.store = store
        self.images = images
        self.snapshotter = snapshotter
        self.clock = clock
        self.progress = LoadProgress()
        self.restored_from: datetime | None = None  # the image's time, when one was used
        self.started_at: datetime | None = None

    def load(self) -> int:
        """Fill the (empty) live state; returns the number of resources. The caller says when
        the process is ready (`progress.ready`): after what follows from the state."""
        now = self.started_at = self.clock()
        image = self._image()
        if image is not None:
            self.progress.step("restoring the stored image", 0, len(image))
            restore_image(self.state, image, now)
            self.progress.step("restoring the stored image", len(image), len(image))
            self.restored_from = image.taken_at
            self.catch_up(image.taken_at, now)
        else:
            self._rebuild(now)
        for minutes in self.windows_minutes:  # each window's sums built before its first reader
            self.state.capacity(self.clock(), minutes)  # as of now: not the load's start
        return len(self.state)

    def _image(self) -> FleetImage | None:
        if self.images is None:
            return None
        self.progress.step("reading the stored image")
        try:
            image = self.images.load()
        except Exception:  # a damaged image costs time, not correctness: rebuild instead
            log.exception("the stored live-state image could not be read; rebuilding")
            return None
        if image is not None and not image.fits(self.state):
            log.warning("the stored live-state image predates a change of rules; rebuilding")
            return None
        return image

    def catch_up(self, since: datetime, now: datetime) -> None:
        """Registry changes and telemetry stored since `since` (less the margin), into the state.
        Idempotent: older or equal samples are ignored, registry rows are upserts."""
        if self.images is not None:
            changed = self.images.resources_changed_since(since - self.REPLAY_MARGIN)
            self._upsert(changed, now, "registry changes since the image")
        self.progress.step("telemetry received since the image")
        self._apply(self.store.samples_received_since(since - self.REPLAY_MARGIN), now)

    def _rebuild(self, now: datetime) -> None:
        self._upsert(self.store.live_resources(), now)
        since = self.snapshotter.replay_since()
        self.progress.step("latest telemetry")
        self._apply(self.store.latest_samples(), now)
        self.state.take_dirty()  # already stored: only what is replayed below needs a new snapshot
        self.progress.step("telemetry received since the latest snapshot")
        self._apply(self.store.samples_received_since(since), now)

    def _upsert(
        self, resources: Iterable[Resource], now: datetime, phase: str = "registry"
    ) -> None:
        chunk: list[Resource] = []
        done = 0
        self.progress.step(phase, 0)
        for resource in resources:
            chunk.append(resource)
            if len(chunk) >= CHUNK:
                self.state.upsert_many(chunk, now)
                done += len(chunk)
                self.progress.step(phase, done)
                chunk.clear()
        self.state.upsert_many(chunk, now)

    def _apply(self, samples: Iterable[StoredSample], now: datetime) -> None:
        batch: list[StoredSample] = []
        done = 0

        def flush() -> None:
            nonlocal done
            rows = self.state.rows_of([b.resource_id for b in batch])
            keep = rows >= 0
            self.state.apply_telemetry(
                rows[keep],
                np.array([b.timestamp.timestamp() for b in batch])[keep],
                np.array([b.soc_pct for b in batch])[keep],
                np.array([b.plugged_in for b in batch], dtype=bool)[keep],
                np.array([b.power_kw for b in batch])[keep],
                now,
            )
            done += len(batch)
            self.progress.done = done
            batch.clear()

        for s in samples:
            batch.append(s)
            if len(batch) >= CHUNK:
                flush()
        if batch:
            flush()

    def save_image(self) -> int:
        """Store an image of the loaded state (the periodic job and a clean stop); bytes written."""
        if self.images is None or not self.progress.ready.is_set():
            return 0
        image = take_image(self.state, self.clock())
        return self.images.save(image)

    def catch_up_after_start(self) -> None:
        """Once this process follows the others (Redis, Kafka): what they stored while it was
        loading and before it followed them, which neither the load nor the feed brought."""
        if self.started_at is not None:
            self.catch_up(self.started_at, self.clock())
