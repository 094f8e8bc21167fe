"""The live state's image in the database: one row, rewritten now and then by any process, read by
every process at start-up (so a replica or worker anywhere restores from it), plus the registry
rows changed since an instant.

The image is an uncompressed `.npz` (numpy's zip of arrays; read back without pickle): the
columns as they are, the resource ids and the interned tables as JSON bytes.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import numpy as np
import orjson
from sqlalchemy import Engine, insert, select, update
from sqlalchemy.exc import IntegrityError

from vpp_aggregator.adapters.store.resource_rows import (
    resource_from_row,
    schedule_from_json,
    schedule_to_json,
    trips_from_json,
    trips_to_json,
)
from vpp_aggregator.adapters.store.tables import resources, state_snapshots
from vpp_aggregator.domain.fleet_image import COLUMNS, FleetImage
from vpp_aggregator.domain.resources import Resource

FORMAT = 2  # bumped when the encoding changes; an image of another format is not read
NAME = "live"


def encode(image: FleetImage) -> bytes:
    meta = {
        "format": FORMAT,
        "taken_at": image.taken_at.isoformat(),
        "groups": image.groups,
        "routines": [[schedule_to_json(s), trips_to_json(t)] for s, t in image.routines],
        "charge_points": image.charge_points,
        "bess_min_soc_pct": image.bess_min_soc_pct,
    }
    arrays: dict[str, Any] = {f"col_{name}": image.columns[name] for name in COLUMNS}
    arrays["meta"] = np.frombuffer(orjson.dumps(meta), dtype=np.uint8)
    arrays["ids"] = np.frombuffer(orjson.dumps(image.resource_ids), dtype=np.uint8)
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def decode(blob: bytes) -> FleetImage | None:
    """The image, or None when it was written in another format (start-up then rebuilds)."""
    with np.load(io.BytesIO(blob), allow_pickle=False) as z:
        meta: dict[str, Any] = orjson.loads(z["meta"].tobytes())
        if meta.get("format") != FORMAT:
            return None
        ids: list[str] = orjson.loads(z["ids"].tobytes())
        columns = {name: z[f"col_{name}"] for name in COLUMNS}
    return FleetImage(
        datetime.fromisoformat(meta["taken_at"]),
        ids,
        columns,
        [(t, node, fleet) for t, node, fleet in meta["groups"]],
        [(schedule_from_json(s), trips_from_json(t)) for s, t in meta["routines"]],
        dict(meta["charge_points"]),
        float(meta["bess_min_soc_pct"]),
    )


class StateSnapshotRepository:
    """Where the live state's image is kept (table `state_snapshots`)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def save(self, image: FleetImage) -> int:
        """Replace the stored image with this one unless the stored one is newer; bytes written."""
        blob = encode(image)
        values = {"taken_at": image.taken_at, "resources": len(image), "data": blob}
        try:
            return self._replace(values, image.taken_at, len(blob))
        except IntegrityError:
            # Two processes found no image and both inserted one (seen when two workers stop
            # together): the row exists now, so the second try compares dates instead.
            return self._replace(values, image.taken_at, len(blob))

    def _replace(self, values: dict[str, Any], taken_at: datetime, size: int) -> int:
        t = state_snapshots
        with self.engine.begin() as conn:
            held = conn.execute(
                select(t.c.taken_at).where(t.c.name == NAME).with_for_update()
            ).scalar_one_or_none()
            if held is None:
                conn.execute(insert(t).values(name=NAME, **values))
            elif held <= taken_at:
                conn.execute(update(t).where(t.c.name == NAME).values(**values))
            else:
                return 0
        return size

    def taken_at(self) -> datetime | None:
        t = state_snapshots
        with self.engine.connect() as conn:
            value: datetime | None = conn.execute(
                select(t.c.taken_at).where(t.c.name == NAME)
            ).scalar_one_or_none()
        return value

    def load(self) -> FleetImage | None:
        t = state_snapshots
        with self.engine.connect() as conn:
            blob = conn.execute(select(t.c.data).where(t.c.name == NAME)).scalar_one_or_none()
        return None if blob is None else decode(bytes(blob))

    def resources_changed_since(self, since: datetime) -> Iterable[Resource]:
        """Registry rows written at or after `since`, deactivated ones included, streamed."""
        q = select(resources).where(resources.c.updated_at >= since)
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=10_000).execute(q):
                yield resource_from_row(row)
