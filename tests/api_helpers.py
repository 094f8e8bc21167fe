"""Request bodies for API tests."""

from __future__ import annotations

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
