"""Request bodies for API tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime
from typing import Any


def ev_body(resource_id: str = "ev-1", **kw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resource_id": resource_id,
        "resource_type": "EV",
        "name": "School bus 1",
        "fleet_id": "depot-1",
        "grid_node": "NODE_A",
        "battery_capacity_kwh": 200.0,
        "max_charge_kw": 60.0,
        "max_discharge_kw": 60.0,
        "v2g_capable": True,
        "telemetry_enabled": True,
        "interconnection": {"approved": True, "reference": "IA-2026-001"},
        "min_soc_pct": 30.0,
    }
    body.update(kw)
    return body


def bess_body(resource_id: str = "bess-1", **kw: Any) -> dict[str, Any]:
    body = ev_body(
        resource_id,
        resource_type="BESS",
        name="Depot battery",
        battery_capacity_kwh=500.0,
        max_charge_kw=250.0,
        max_discharge_kw=250.0,
        min_soc_pct=20.0,
    )
    body.update(kw)
    return body


def sample(
    resource_id: str, at: datetime, soc: float, plugged: bool = True, power: float = 0.0
) -> dict[str, Any]:
    return {
        "resource_id": resource_id,
        "timestamp": at.isoformat(),
        "soc_pct": soc,
        "plugged_in": plugged,
        "power_kw": power,
    }


def add_batteries(client: Any, at: datetime, node: str, count: int = 3, soc: float = 90.0) -> None:
    """`count` batteries bess-0.. (500 kWh, 250 kW) on `node`, each reporting `soc` at `at`."""
    for i in range(count):
        client.post("/resources/register", json=bess_body(f"bess-{i}", grid_node=node))
    client.post(
        "/telemetry", json={"samples": [sample(f"bess-{i}", at, soc) for i in range(count)]}
    )


@contextlib.contextmanager
def live_server(settings: Any) -> Iterator[str]:
    """The app served by uvicorn on a free loopback port in a thread, for clients that need a
    real URL (a browser, the command line); stopped afterwards."""
    import threading
    import time

    import uvicorn

    from conftest import _free_port
    from vpp_aggregator.adapters.api.app import create_app

    port = _free_port()
    srv = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
