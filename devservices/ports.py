"""Loopback ports for the services and processes a test or benchmark starts."""

from __future__ import annotations

import socket
import subprocess
import time


def free_port() -> int:
    """A port nothing listens on now (the caller binds it soon after; a rare race is possible)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def wait_listening(port: int, proc: subprocess.Popen[bytes], what: str, timeout_s: float) -> None:
    """Until `proc` accepts connections on `port`; raises if it exits or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while not listening(port):
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(
                f"{what} did not accept connections on {port} within {timeout_s:g} s"
            )
        time.sleep(0.05)
