"""Two workers and two API replicas on one broker, Redis and PostgreSQL: the replicas answer what
the single-process embedded mode computes for the same data, and killing a worker mid-stream
loses nothing."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import redis
from confluent_kafka import Producer
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from conftest import _free_port
from devservices.synthetic import synthetic_fleet
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.adapters.store.database import make_engine
from vpp_aggregator.adapters.store.repository import Repository
from vpp_aggregator.adapters.store.tables import telemetry_samples
from vpp_aggregator.config import load_settings

N = 10_000
ROUNDS = 3
CLI = Path(sys.executable).parent / "vpp-aggregator"
COMPARED = (
    "discharge",
    "charge",
    "gross_energy_kwh",
    "resource_count",
    "available_resource_count",
    "by_grid_node",
)


def fleet():  # type: ignore[no-untyped-def]
    # No departure routines: capacity then does not move with the clock, so processes asked a
    # moment apart must agree exactly.
    return [dataclasses.replace(r, departure_schedule=()) for r in synthetic_fleet(N)]


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(CLI), *args], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def _tails(procs: dict[str, tuple[subprocess.Popen[bytes], int, Path]]) -> str:
    """The end of each process's log, so a failure in CI says what the processes saw."""
    return "\n".join(
        f"--- {name} (exit {proc.poll()}):\n{log.read_bytes()[-3000:].decode('utf-8', 'replace')}"
        for name, (proc, _, log) in procs.items()
    )


def _stored(engine: Engine) -> int:
    """A transaction of its own each time: one held open across the polls would keep the
    workers from making a new day's partition of the table."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(telemetry_samples)).scalar_one())


def wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"process on {port} exited:\n{log.read_text()[-3000:]}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"process on {port} never became ready:\n{log.read_text()[-3000:]}")


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    client = redis.Redis.from_url(redis_url)
    name = f"vpptest-{uuid.uuid4().hex[:8]}"
    yield name
    for key in client.scan_iter(f"{name}:*"):
        client.delete(key)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_two_workers_and_two_replicas_match_the_embedded_mode_and_lose_nothing(
    database_url: str,
    kafka_brokers: str,
    kafka_topics: dict[str, str],
    redis_prefix: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    now = datetime.now(UTC)
    resources = fleet()
    for r in resources:
        r.created_at = r.updated_at = now
    engine = make_engine(database_url)
    Repository(engine).add_many(resources)
    env = {
        **os.environ,
        **kafka_topics,
        "DATABASE_URL": database_url,
        "KAFKA_BROKERS": kafka_brokers,
        "REDIS_URL": redis_url,
        "VPP_REDIS_PREFIX": redis_prefix,
        "VPP_MODEL_DIR": str(tmp_path / "models"),
        "VPP_FORECAST_RETRAIN_HOURS": "0",
        "VPP_MARKET_TICK_SECONDS": "3600",
        "VPP_KAFKA_PARTITIONS": "4",
    }
    procs: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
    try:
        for name in ("worker-1", "worker-2"):
            port, log = _free_port(), tmp_path / f"{name}.log"
            procs[name] = (start(["worker", "--port", str(port)], env, log), port, log)
        for name in ("api-1", "api-2"):
            port, log = _free_port(), tmp_path / f"{name}.log"
            api_env = {**env, "PORT": str(port), "VPP_KAFKA_CONSUME": "false"}
            procs[name] = (start(["serve"], api_env, log), port, log)
        for proc, port, log in procs.values():
            wait_ready(port, proc, log)

        producer = Producer({"bootstrap.servers": kafka_brokers, "linger.ms": 20})
        last: dict[str, dict[str, object]] = {}
        sent = 0
        for k in range(ROUNDS):
            for i, r in enumerate(resources):
                s = {
                    "resource_id": r.resource_id,
                    "timestamp": datetime.now(UTC).isoformat(),
                    "soc_pct": 30.0 + (i * 7 + k * 13) % 65,
                    "plugged_in": (i + k) % 6 != 0,
                    "power_kw": 0.0,
                }
                producer.produce(
                    kafka_topics["VPP_TOPIC_TELEMETRY"], key=r.resource_id, value=json.dumps(s)
                )
                last[r.resource_id] = s
                sent += 1
                if sent % 5000 == 0:
                    producer.poll(0)
                if k == 1 and i == N // 2:  # mid-stream: one worker dies without warning
                    producer.flush(10)
                    procs["worker-1"][0].send_signal(signal.SIGKILL)
        assert producer.flush(30) == 0

        # Every sample sent is stored once, whoever handled it (the survivor takes over).
        deadline = time.monotonic() + 240  # generous: the suite shares 2 cores with it
        while (stored := _stored(engine)) < sent:
            assert time.monotonic() < deadline, f"{stored} of {sent} samples stored\n" + _tails(
                procs
            )
            time.sleep(0.5)
        assert stored == sent

        # The embedded mode on the same data.
        embedded_settings = load_settings(DATABASE_URL=f"sqlite:///{tmp_path / 'embedded.db'}")
        with TestClient(create_app(embedded_settings)) as embedded:
            embedded.app.state.aggregator.registry.register_many(fleet())
            finals = list(last.values())
            for j in range(0, len(finals), 10_000):
                assert (
                    embedded.post(
                        "/telemetry", json={"samples": finals[j : j + 10_000]}
                    ).status_code
                    == 200
                )
            want = embedded.get("/capacity/available").json()
        expected = {key: want[key] for key in COMPARED}
        assert expected["available_resource_count"] > 0

        for name in ("api-1", "api-2"):
            port = procs[name][1]
            deadline = time.monotonic() + 180  # a loaded 2-core machine is slow, not wrong
            while True:
                got = httpx.get(f"http://127.0.0.1:{port}/capacity/available", timeout=5).json()
                if {key: got[key] for key in COMPARED} == expected:
                    break
                assert time.monotonic() < deadline, (
                    f"{name} answers {got['discharge']} not {expected['discharge']}"
                )
                time.sleep(0.5)
        ready = httpx.get(f"http://127.0.0.1:{procs['worker-2'][1]}/health/ready", timeout=5).json()
        assert ready["dependencies"]["kafka"]["consuming"] is True
    finally:
        for proc, _, _ in procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc, _, _ in procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        engine.dispose()
