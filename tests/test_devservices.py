"""The servers a test run starts end with it, even when the run is killed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from services import in_ci

STARTER = """
import time
from devservices.{module} import {cls}
server = {cls}()
server.start()
print(server.proc.pid, flush=True)
time.sleep(600)
"""
SERVERS = {
    "redis-server": ("redis", "PrivateRedis"),
    "postgres": ("postgres", "PrivatePostgres"),
}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone for our purpose
        return stat.read().split()[2] != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux's")
@pytest.mark.parametrize("name", sorted(SERVERS))
def test_a_server_started_for_a_run_dies_when_the_run_is_killed(name: str) -> None:
    from devservices.postgres import server_bin

    if (shutil.which(name) if name == "redis-server" else server_bin()) is None:
        if in_ci():
            pytest.fail(f"{name} is not installed")
        pytest.skip(f"{name} is not installed")
    module, cls = SERVERS[name]
    code = STARTER.format(module=module, cls=cls)
    starter = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert starter.stdout is not None
    server = int(starter.stdout.readline())
    assert alive(server)
    starter.send_signal(signal.SIGKILL)  # no finally, no atexit: only the kernel can clean up
    starter.wait(timeout=30)
    deadline = time.monotonic() + 30
    while alive(server):
        assert time.monotonic() < deadline, f"{name} {server} outlived the killed run"
        time.sleep(0.05)


def test_kafka_cluster_ids_never_look_like_an_option() -> None:
    from devservices.kafka import new_cluster_id

    ids = [new_cluster_id() for _ in range(5000)]  # about 78 would start with "-" by chance
    assert all(not cid.startswith("-") and len(cid) == 22 for cid in ids)
