"""The servers a test run starts end with it, even when the run is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from services import in_ci

STARTER = """
from vpp_aggregator.devservices.redis import PrivateRedis
r = PrivateRedis()
r.start()
print(r.proc.pid, flush=True)
import time
time.sleep(600)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone for our purpose
        return stat.read().split()[2] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
def test_a_server_started_for_a_run_dies_when_the_run_is_killed() -> None:
    from shutil import which

    if which("redis-server") is None:
        if in_ci():
            pytest.fail("redis-server is not installed")
        pytest.skip("redis-server is not installed")
    starter = subprocess.Popen([sys.executable, "-c", STARTER], stdout=subprocess.PIPE, text=True)
    assert starter.stdout is not None
    server = int(starter.stdout.readline())
    assert alive(server)
    starter.send_signal(signal.SIGKILL)  # no finally, no atexit: only the kernel can clean up
    starter.wait(timeout=30)
    deadline = time.monotonic() + 30
    while alive(server):
        assert time.monotonic() < deadline, f"redis-server {server} outlived the killed run"
        time.sleep(0.05)
