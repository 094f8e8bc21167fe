"""The servers the test run talks to, found or started once per run (by xdist's controller, or
the only process) and handed to the workers through environment variables of our own.

DATABASE_URL, REDIS_URL and KAFKA_BROKERS name servers to use (devservices.local
finds or starts the others). The three are then taken out of the environment, so that an app a
test builds never picks one up by accident: tests pass their servers explicitly.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from devservices import local

PG_VAR, REDIS_VAR, KAFKA_VAR, KAFKA_KIND_VAR = (
    "VPP_TEST_DATABASE_URL",
    "VPP_TEST_REDIS_URL",
    "VPP_TEST_KAFKA_BROKERS",
    "VPP_TEST_KAFKA_KIND",
)
PROBLEMS_VAR = "VPP_TEST_SERVICE_PROBLEMS"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass
class RunServices:
    """What this run uses, how it was found, and how to stop what was started for it."""

    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    _stops: list[Callable[[], None]] = field(default_factory=list)

    def _one(
        self, name: str, given_var: str, var: str, find: Callable[[str | None], local.Found]
    ) -> None:
        try:
            found = find(os.environ.pop(given_var, None))
        except Exception as exc:
            self.problems.append(f"{name}: {type(exc).__name__}: {exc}")
            return
        self._stops.append(found.stop)
        self.lines.append(found.description)
        os.environ[var] = found.address
        if found.kind:
            os.environ[KAFKA_KIND_VAR] = found.kind

    def start_all(self) -> RunServices:
        self._one("PostgreSQL", "DATABASE_URL", PG_VAR, local.postgres)
        self._one("Redis", "REDIS_URL", REDIS_VAR, local.redis)
        self._one("Kafka", "KAFKA_BROKERS", KAFKA_VAR, local.kafka)
        if self.problems:
            os.environ[PROBLEMS_VAR] = " | ".join(self.problems)
        return self

    def stop_all(self) -> None:
        for stop in reversed(self._stops):
            with contextlib.suppress(Exception):
                stop()
