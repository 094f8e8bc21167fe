"""`python -m devservices`: resolve Apache Kafka's jars now (the set-up step of
`make test`), so the first test run does not pay for it inside a fixture."""

from __future__ import annotations

import sys
import time

from devservices.kafka import (
    KAFKA_VERSION,
    KafkaUnavailableError,
    cache_dir,
    classpath,
)


def main() -> int:
    began = time.monotonic()
    try:
        jars = classpath()
    except KafkaUnavailableError as exc:
        print(f"kafka: {exc}", file=sys.stderr)
        return 1
    print(
        f"kafka: Apache Kafka {KAFKA_VERSION}, {len(jars.split(':'))} jars in the Maven cache "
        f"(listed in {cache_dir()}/classpath.txt), {time.monotonic() - began:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
