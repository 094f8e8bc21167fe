"""The service as `serve` runs it (settings from the environment), except that it dies the moment
it would commit a Kafka transaction holding a dead letter: after the batch is stored and the dead
letter and offsets are written inside the transaction, before the commit. Exit code 70.
Used by test_kafka_cluster.py; not a test itself."""

from __future__ import annotations

import os
import threading
from typing import Any

from fastapi.testclient import TestClient

from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.adapters.bus import kafka_transactions
from vpp_aggregator.config import load_settings


class CrashBeforeCommit:
    """Wraps the transactional producer; everything else passes through."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.produced = 0

    def begin_transaction(self) -> None:
        self.produced = 0
        self.real.begin_transaction()

    def produce(self, *args: Any, **kwargs: Any) -> None:
        self.produced += 1
        self.real.produce(*args, **kwargs)

    def commit_transaction(self, *args: Any) -> None:
        if self.produced:
            self.real.flush(30)  # the dead letter reaches the broker, inside the transaction
            os._exit(70)
        self.real.commit_transaction(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


RealProducer = kafka_transactions.Producer


def crashing_producer(config: dict[str, Any]) -> Any:
    return CrashBeforeCommit(RealProducer(config))


kafka_transactions.Producer = crashing_producer  # type: ignore[assignment,misc]

if __name__ == "__main__":
    with TestClient(create_app(load_settings())):
        threading.Event().wait(600)  # until the crash (the test kills us past its deadline)
