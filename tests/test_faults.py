"""Faults on real services: PostgreSQL, Redis and the Kafka broker restarted while telemetry and
dispatches flow. The service recovers by itself, readiness names each outage while it lasts, and
nothing it accepted is lost (counted end to end). Private instances on loopback, so the machine's
own services (and other tests) are not disturbed."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
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
from conftest import _free_port, start_tansu

PG_BIN = (
    next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None)
    if Path("/usr/lib/postgresql").is_dir()
    else None
)
RUNUSER = shutil.which("runuser")
REDIS = shutil.which("redis-server")
CLI = Path(sys.executable).parent / "vpp-aggregator"


class PrivatePostgres:
    def __init__(self) -> None:
        assert PG_BIN is not None and RUNUSER is not None
        self.dir = Path(tempfile.mkdtemp(prefix="vpp-pg-", dir="/tmp"))
        self.dir.chmod(0o755)
        shutil.chown(self.dir, "postgres", "postgres")
        self.port = _free_port()
        self._pg(["initdb", "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust", "-N"])

    def _pg(self, args: list[str]) -> None:
        subprocess.run(
            [RUNUSER, "-u", "postgres", "--", str(PG_BIN / args[0]), *args[1:]],  # type: ignore[operator]
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg(
            [
                "pg_ctl",
                "-D",
                str(self.dir / "data"),
                "-l",
                str(self.dir / "log"),
                "-o",
                opts,
                "-w",
                "start",
            ]
        )

    def stop(self) -> None:
        self._pg(["pg_ctl", "-D", str(self.dir / "data"), "-m", "fast", "-w", "stop"])

    def remove(self) -> None:
        with_suppressed(self.stop)
        shutil.rmtree(self.dir, ignore_errors=True)


def with_suppressed(fn: Callable[[], None]) -> None:
    with contextlib.suppress(Exception):
        fn()


class PrivateRedis:
    def __init__(self) -> None:
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                REDIS or "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
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
) -> Iterator[tuple[PrivatePostgres, PrivateRedis, list[object]]]:
    if PG_BIN is None or RUNUSER is None or REDIS is None or os.geteuid() != 0:
        pytest.skip("needs PostgreSQL binaries, redis-server and root (to run initdb as postgres)")
    pg, rd = PrivatePostgres(), PrivateRedis()
    pg.start()
    rd.start()
    broker: list[object] = []
    try:
        yield pg, rd, broker
    finally:
        rd.stop()
        pg.remove()
        for b in broker:
            with_suppressed(b.terminate)  # type: ignore[attr-defined]


def test_service_rides_out_postgres_redis_and_kafka_restarts_losing_nothing(
    services: tuple[PrivatePostgres, PrivateRedis, list[object]],
    kafka_topics: dict[str, str],
    tmp_path: Path,
) -> None:
    pg, rd, brokers = services
    kport = _free_port()
    brokers.append(start_tansu(kport))
    kafka = f"127.0.0.1:{kport}"
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        **kafka_topics,
        "DATABASE_URL": pg.url,
        "REDIS_URL": f"redis://127.0.0.1:{rd.port}/0",
        "KAFKA_BROKERS": kafka,
        "PORT": str(port),
        "VPP_HOST": "127.0.0.1",
        "VPP_DISPATCH_TICK_SECONDS": "0.5",
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
        kafka_paused = threading.Event()
        producer = Producer({"bootstrap.servers": kafka, "message.timeout.ms": 3000})

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
                    if not kafka_paused.is_set():
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
        # The broker keeps nothing across a restart (memory storage): let the service drain what
        # it was sent first, so what is lost would be ours, not the broker's.
        kafka_paused.set()
        producer.flush(10)
        engine = create_engine(pg.url, pool_pre_ping=True)

        def stored() -> int:
            with engine.connect() as c:
                return int(c.execute(text("SELECT count(*) FROM telemetry_samples")).scalar_one())

        wait_for(
            lambda: stored() >= accepted["http"] + accepted["kafka"], "the consumer to catch up", 60
        )

        def broker_down() -> None:
            brokers[0].terminate()  # type: ignore[attr-defined]
            brokers[0].wait(timeout=10)  # type: ignore[attr-defined]

        before_kafka_outage = len(dispatch_ids)
        outage("kafka", broker_down, lambda: brokers.append(start_tansu(kport)))
        assert len(dispatch_ids) > before_kafka_outage  # dispatches went on while Kafka was down
        # The broker came back empty (memory storage: no topics, offsets or groups). Kafka telemetry
        # resumes: the consumer must rejoin, find its topics again and read from the start of them.
        kafka_before_restart = accepted["kafka"]
        kafka_paused.clear()
        wait_for(
            lambda: accepted["kafka"] >= kafka_before_restart + 200,
            "the restarted broker to acknowledge new telemetry",
            60,
        )
        time.sleep(3)
        stop.set()
        worker.join(timeout=30)
        producer.flush(10)

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
