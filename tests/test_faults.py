"""Faults on real services: PostgreSQL, Redis and the Kafka broker (Apache Kafka, killed as in a
crash) restarted while telemetry and dispatches flow. The service recovers by itself, readiness
names each outage while it lasts, and nothing it accepted is lost (counted end to end). Private
instances on loopback, so the run's shared servers (and other tests) are not disturbed."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
from confluent_kafka import Producer
from sqlalchemy import create_engine, text

from api_helpers import bess_body
from conftest import _free_port, require_apache_kafka
from devservices.kafka import KafkaCluster
from devservices.postgres import PostgresUnavailableError, PrivatePostgres
from devservices.redis import PrivateRedis, RedisUnavailableError
from services import in_ci

CLI = Path(sys.executable).parent / "vpp-aggregator"


def with_suppressed(fn: Callable[[], None]) -> None:
    with contextlib.suppress(Exception):
        fn()


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def ready(base: str) -> dict[str, object]:
    return httpx.get(f"{base}/health/ready", timeout=5).json()  # type: ignore[no-any-return]


@pytest.fixture
def services(
    kafka_topics: dict[str, str],
) -> Iterator[tuple[PrivatePostgres, PrivateRedis, KafkaCluster]]:
    require_apache_kafka()
    try:
        pg, rd = PrivatePostgres(), PrivateRedis()
    except (PostgresUnavailableError, RedisUnavailableError) as exc:
        if in_ci():
            pytest.fail(f"{exc}")
        pytest.skip(f"{exc}")
    pg.start()
    rd.start()
    kafka = KafkaCluster(size=1)
    try:
        kafka.start()
        yield pg, rd, kafka
    finally:
        rd.stop()
        pg.remove()
        kafka.stop()


def test_service_rides_out_postgres_redis_and_kafka_restarts_losing_nothing(
    services: tuple[PrivatePostgres, PrivateRedis, KafkaCluster],
    kafka_topics: dict[str, str],
    tmp_path: Path,
) -> None:
    pg, rd, cluster = services
    kafka = cluster.bootstrap
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        **kafka_topics,
        "DATABASE_URL": pg.url.replace("postgresql://", "postgresql+psycopg://"),
        "REDIS_URL": rd.url,
        "KAFKA_BROKERS": kafka,
        "PORT": str(port),
        "VPP_HOST": "127.0.0.1",
        "VPP_DISPATCH_TICK_SECONDS": "0.5",
        "VPP_OUTBOX_SWEEP_SECONDS": "0.5",
        "VPP_MARKET_ENABLED": "false",
        "VPP_FORECAST_RETRAIN_HOURS": "0",
        "VPP_MODEL_DIR": str(tmp_path / "m"),
    }
    log = tmp_path / "service.log"
    service = subprocess.Popen(
        [str(CLI), "serve"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    try:
        wait_for(lambda: ready(base)["status"] == "ready", "the service to start")
        ids = [f"bess-{i:03d}" for i in range(40)]
        with httpx.Client(base_url=base, timeout=10) as api:
            for rid in ids:
                api.post(
                    "/resources/register", json=bess_body(rid, grid_node="NODE_F")
                ).raise_for_status()

        accepted = {"http": 0, "kafka": 0}
        dispatch_ids: list[str] = []
        stop = threading.Event()
        # As the physics engine would: idempotent, acks=all, riding out the outage in its queue
        # (a message the broker wrote just before the crash is then acknowledged once, not lost
        # from the count).
        producer = Producer(
            {
                "bootstrap.servers": kafka,
                "enable.idempotence": True,
                "acks": "all",
                "message.timeout.ms": 180_000,
            }
        )

        def acked(err: object, _msg: object) -> None:
            if err is None:
                accepted["kafka"] += 1

        def load() -> None:
            tick = 0
            with httpx.Client(base_url=base, timeout=10) as api:
                while not stop.is_set():
                    tick += 1
                    now = datetime.now(UTC)
                    batch = [
                        {
                            "resource_id": rid,
                            "timestamp": now.isoformat(),
                            "soc_pct": 60 + (tick % 30),
                            "plugged_in": True,
                            "power_kw": 0.0,
                        }
                        for rid in ids[:20]
                    ]
                    try:
                        r = api.post("/telemetry", json={"samples": batch})
                        if r.status_code == 200:
                            accepted["http"] += r.json()["accepted"]
                    except httpx.HTTPError:
                        pass
                    for rid in ids[20:]:
                        s = {
                            "resource_id": rid,
                            "timestamp": now.isoformat(),
                            "soc_pct": 70.0,
                            "plugged_in": True,
                        }
                        producer.produce(
                            kafka_topics["VPP_TOPIC_TELEMETRY"],
                            key=rid,
                            value=orjson.dumps(s),
                            on_delivery=acked,
                        )
                    producer.poll(0)
                    if tick % 10 == 0:
                        try:
                            r = api.post(
                                "/dispatch",
                                json={
                                    "target_kw": 20,
                                    "duration_minutes": 5,
                                    "resource_ids": [ids[tick % 40]],
                                },
                            )
                            if r.status_code == 201:
                                dispatch_ids.append(r.json()["dispatch_id"])
                        except httpx.HTTPError:
                            pass
                    time.sleep(0.1)

        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        time.sleep(3)

        def outage(name: str, down: Callable[[], None], up: Callable[[], None]) -> None:
            down()
            wait_for(lambda: name in ready(base)["down"], f"readiness to report {name} down")  # type: ignore[operator]
            time.sleep(2)
            up()
            wait_for(
                lambda: ready(base)["status"] == "ready", f"recovery after the {name} restart", 90
            )
            time.sleep(2)

        outage("database", pg.stop, pg.start)
        outage("redis", rd.stop, rd.start)
        engine = create_engine(
            pg.url.replace("postgresql://", "postgresql+psycopg://"), pool_pre_ping=True
        )

        def stored() -> int:
            with engine.connect() as c:
                return int(c.execute(text("SELECT count(*) FROM telemetry_samples")).scalar_one())

        # The broker crashes (SIGKILL) while telemetry flows to it and comes back with its data:
        # what it had acknowledged and the service had not consumed yet is consumed after it.
        before_kafka_outage = len(dispatch_ids)
        node = cluster.nodes[0]
        outage("kafka", lambda: cluster.kill_node(node), lambda: cluster.start_node(node))
        assert len(dispatch_ids) > before_kafka_outage  # dispatches went on while Kafka was down
        kafka_before_restart = accepted["kafka"]
        wait_for(
            lambda: accepted["kafka"] >= kafka_before_restart + 200,
            "the restarted broker to acknowledge new telemetry",
            60,
        )
        time.sleep(3)
        stop.set()
        worker.join(timeout=30)
        assert producer.flush(180) == 0

        # Nothing accepted is lost: every acknowledged sample is stored once.
        expected = accepted["http"] + accepted["kafka"]
        wait_for(
            lambda: stored() >= expected,
            f"every accepted sample to be stored ({accepted}, stored {stored()}; log {log})",
            60,
        )
        assert stored() == expected
        # Every dispatch the API confirmed exists, and every command it made was published.
        with engine.connect() as c:
            known = set(c.execute(text("SELECT dispatch_id FROM dispatches")).scalars())
        assert set(dispatch_ids) <= known and len(dispatch_ids) >= 5
        wait_for(
            lambda: (
                engine.connect()
                .execute(text("SELECT count(*) FROM control_commands WHERE published_at IS NULL"))
                .scalar_one()
                == 0
            ),
            "the outbox to empty",
        )
        # (That those commands can be read back from the restarted broker is shown by
        # test_kafka_integration's outage test; here the outbox holds none unacknowledged.)
        engine.dispose()
        print(
            f"faults: {expected} samples accepted and stored, {len(dispatch_ids)} dispatches, 3 restarts"
        )
    finally:
        service.terminate()
        try:
            service.wait(timeout=15)
        except subprocess.TimeoutExpired:
            service.kill()
