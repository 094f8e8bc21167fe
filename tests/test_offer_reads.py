"""A run of offers reads the store once per span, not once per grid node and interval: at a
million resources on 50 nodes the per-interval reads were most of a market interval's work, on a
thread beside the one answering requests."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi.testclient import TestClient

from api_helpers import bess_body, sample
from conftest import Clock
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.config import load_settings


class Counting:
    """Forwards every call to `inner`, counting those named in `names`."""

    def __init__(self, inner: Any, names: tuple[str, ...]) -> None:
        self.inner, self.names, self.calls = inner, names, Counter[str]()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in self.names:
            return attr

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return attr(*args, **kwargs)

        return counted


def test_offers_read_commitments_once_per_run_when_nothing_is_committed(
    tmp_path: Any, clock: Clock
) -> None:
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'r.db'}",
        VPP_SITE_TIMEZONE="UTC",
        VPP_MARKET_ENABLED="false",  # offers only when asked
        VPP_MARKETS="real_time",
        VPP_MARKET_RT_GATE_CLOSURE_MINUTES="120",  # 12 five-minute intervals open
    )
    with TestClient(create_app(settings, clock=clock)) as c:
        for node in ("NODE_A", "NODE_B", "NODE_C"):
            for i in range(3):  # 750 kW a node: above the market minimum
                c.post("/resources/register", json=bess_body(f"{node}-{i}", grid_node=node))
                c.post("/telemetry", json={"samples": [sample(f"{node}-{i}", clock.now, 90.0)]})
        maker = c.app.state.aggregator.market.maker  # type: ignore[attr-defined]
        repo = maker.repo = Counting(maker.repo, ("awarded_in",))
        dispatch = maker.dispatch = Counting(maker.dispatch, ("busy_everywhere",))
        offers = maker.generate()
        assert {o["aggregation_id"] for o in offers} == {"NODE_A", "NODE_B", "NODE_C"}
        assert len(offers) == 3 * 12
        # once per node over the whole span, and once for what dispatches hold
        assert repo.calls["awarded_in"] == 3
        assert dispatch.calls["busy_everywhere"] == 1
