"""Shared fixtures: a settable clock, a fresh database per test on SQLite and on PostgreSQL, and
the run's real servers (PostgreSQL, Redis, Apache Kafka), found or started once per run."""

from __future__ import annotations

import contextlib
import os
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import services

# Tiers: `unit` runs in-process (domain, services, API on SQLite); `integration` needs the run's
# PostgreSQL, Redis or Kafka; `e2e` starts processes or a browser. `make test` runs all three,
# `make test-unit` only the first, without starting any server.
SERVICE_FIXTURES = {"pg_admin_url", "pg_template", "redis_url", "kafka_brokers", "kafka_topics"}
E2E_FILES = {
    "test_closed_by_default.py",
    "test_container.py",
    "test_dashboard.py",
    "test_dependency_audit.py",
    "test_devservices.py",
    "test_faults.py",
    "test_kafka_cluster.py",
    "test_native_heap.py",
    "test_readme_walkthrough.py",
    "test_scale_out.py",
}
INTEGRATION_FILES = {"test_kafka_integration.py", "test_redis_replicas.py"}


def _tier(item: pytest.Item) -> str:
    name = Path(str(item.fspath)).name
    if name in E2E_FILES:
        return "e2e"
    callspec = getattr(item, "callspec", None)
    on_postgres = callspec is not None and callspec.params.get("database_url") == "postgresql"
    fixtures = set(getattr(item, "fixturenames", ()))
    if name in INTEGRATION_FILES or on_postgres or fixtures & SERVICE_FIXTURES:
        return "integration"
    return "unit"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        item.add_marker(getattr(pytest.mark, _tier(item)))


def _unit_only(config: pytest.Config) -> bool:
    return str(config.getoption("markexpr", "") or "").strip() == "unit"


def pytest_configure(config: pytest.Config) -> None:
    """The controller (or the only process) finds or starts the servers; workers inherit them."""
    for tier, what in (
        ("unit", "in-process: domain, services, the API on SQLite"),
        ("integration", "needs the run's PostgreSQL, Redis or Kafka"),
        ("e2e", "starts processes or a browser"),
    ):
        config.addinivalue_line("markers", f"{tier}: {what}")
    if hasattr(config, "workerinput") or _unit_only(config):
        return
    found = config.stash[_SERVICES] = services.RunServices().start_all()
    for line in [*found.lines, *found.problems]:
        if "NOT APACHE KAFKA" in line or line in found.problems:
            sys.stderr.write(f"services: {line}\n")  # at the start too, not only at the end


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and _SERVICES in config.stash:
        config.stash[_SERVICES].stop_all()


def pytest_report_header(config: pytest.Config) -> list[str]:
    found = config.stash.get(_SERVICES, None)
    if found is None:
        return []
    return [f"services: {line}" for line in found.lines] + [
        f"services: NOT AVAILABLE: {problem}" for problem in found.problems
    ]


_MEASURED: list[tuple[str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Figures a test measured (`record_property("measured", ...)`), shown at the end of the run
    (xdist hands workers' reports to the controller, so they arrive here too)."""
    if report.when == "call":
        _MEASURED.extend(
            (report.nodeid.split("::")[-1], str(v))
            for k, v in report.user_properties
            if k == "measured"
        )


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    for test, figures in _MEASURED:
        terminalreporter.write_line(f"measured: {test}: {figures}")
    found = config.stash.get(_SERVICES, None)
    if found is not None:
        for line in [*found.lines, *(f"NOT AVAILABLE: {p}" for p in found.problems)]:
            terminalreporter.write_line(f"services: {line}")


_SERVICES = pytest.StashKey[services.RunServices]()


def require(service: str) -> str:
    """The run's address of `service`; a missing one skips the test, or fails it under CI."""
    var = {
        "PostgreSQL": services.PG_VAR,
        "Redis": services.REDIS_VAR,
        "Kafka": services.KAFKA_VAR,
    }[service]
    value = os.environ.get(var)
    if value:
        return value
    why = os.environ.get(services.PROBLEMS_VAR, "") or "not started"
    message = f"{service} is not available for this run ({why}); `make test` sets it up"
    if services.in_ci():
        pytest.fail(message)
    pytest.skip(message)


def require_apache_kafka() -> None:
    """For tests of Apache Kafka itself (a cluster of our own): needs java and mvn."""
    from devservices.kafka import tools_present

    if not tools_present():
        message = "Apache Kafka needs java and mvn on PATH"
        if services.in_ci():
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    return require("PostgreSQL")


@pytest.fixture(scope="session")
def redis_url() -> str:
    return require("Redis")


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
def pg_template(pg_admin_url: str) -> Iterator[str]:
    """A migrated template database for this run; each test copies it."""
    from vpp_aggregator.adapters.store.database import make_engine, migrate

    name = f"vpp_test_tpl_{uuid.uuid4().hex[:10]}"
    try:
        admin = _pg_connect(pg_admin_url)
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.fail(f"PostgreSQL is not reachable at {pg_admin_url} ({exc})")
    admin.execute(f'CREATE DATABASE "{name}"')
    url = pg_admin_url.rsplit("/", 1)[0] + f"/{name}"
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
    admin_url = require("PostgreSQL")
    name = f"vpp_test_{uuid.uuid4().hex[:12]}"
    admin = _pg_connect(admin_url)
    admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield "postgresql+psycopg://" + admin_url.split("://", 1)[1].rsplit("/", 1)[0] + f"/{name}"
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _free_port() -> int:
    from devservices.kafka import free_port

    return free_port()


@pytest.fixture(scope="session")
def kafka_brokers() -> str:
    """The run's broker: KAFKA_BROKERS when set, else Apache Kafka started for this run (Tansu
    only where no JDK is present, and the run's header says so)."""
    return require("Kafka")


def kafka_kind() -> str:
    """apache, tansu or external (KAFKA_BROKERS)."""
    return os.environ.get(services.KAFKA_KIND_VAR, "")


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
        "VPP_TOPIC_AGGREGATE_TELEMETRY": f"t{run}.aggregation.telemetry",
        "VPP_TOPIC_REGULATION_SIGNAL": f"t{run}.regulation.signal",
        "VPP_TOPIC_REGULATION_COMMANDS": f"t{run}.regulation.commands",
        "VPP_TOPIC_REGULATION_BROADCAST": f"t{run}.regulation.broadcast",
        "VPP_KAFKA_GROUP_ID": f"vpp-test-{run}",
        "VPP_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "VPP_KAFKA_PARTITIONS": "2",
        **({"VPP_KAFKA_TRANSACTIONS": "false"} if kafka_kind() == "tansu" else {}),
    }
