"""The image we ship, built by `make image` and used as an operator would: started with a
secret on a read-only root, asked for its health, sent a registration and telemetry, read for
capacity, and stopped. Needs a Docker engine: the one the client reaches, or Debian's dockerd
started here (devservices/docker.py); where none can run, the test skips and says why."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest
import yaml

from devservices.docker import DockerUnavailableError, Engine, base_image, engine
from devservices.kafka import KAFKA_VERSION
from devservices.ports import free_port

ROOT = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def docker_engine() -> Iterator[Engine]:
    try:
        e = engine()
    except DockerUnavailableError as exc:
        pytest.skip(f"no Docker engine can run here: {exc}")
    yield e
    e.stop()


@pytest.fixture(scope="module")
def image(docker_engine: Engine, record_testsuite_property: object) -> Iterator[tuple[str, str]]:
    """`make image` under a tag of this run; (tag, what the base image was and how long the
    build took)."""
    base = base_image(docker_engine)
    tag = f"vpp-aggregator:test-{secrets.token_hex(4)}"
    began = time.monotonic()
    built = subprocess.run(
        ["make", "-s", "image", f"IMAGE={tag}"],
        cwd=ROOT,
        env=docker_engine.env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    took = time.monotonic() - began
    yield tag, f"{base}; make image {took:.0f} s"
    docker_engine.docker("image", "rm", "-f", tag, check=False)
    # Build stages of earlier runs (the newest are the next build's cache) stay bounded.
    docker_engine.docker("image", "prune", "-f", "--filter", "until=24h", check=False)


def _token(secret: str, role: str = "admin") -> dict[str, str]:
    claims = {"sub": "container-test", "role": role, "exp": datetime.now(UTC) + timedelta(hours=1)}
    return {"authorization": f"Bearer {jwt.encode(claims, secret, algorithm='HS256')}"}


def _wait_healthy(url: str, container: str, e: Engine, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            ready = httpx.get(f"{url}/health/ready", timeout=5).json()
            if ready["dependencies"]["live_state"]["ok"]:  # up, with its live state loaded
                return
        except httpx.HTTPError:
            pass
        state = e.docker("inspect", "--format", "{{.State.Status}}", container)
        assert state == "running", e.docker("logs", container, check=False)
        time.sleep(0.5)
    raise AssertionError(f"no /health within {timeout_s} s: {e.docker('logs', container)}")


def test_the_image_runs_as_an_operator_would(
    docker_engine: Engine, image: tuple[str, str], record_property: object
) -> None:
    e = docker_engine
    tag, how = image
    config = json.loads(e.docker("image", "inspect", tag))[0]["Config"]
    assert config["User"] == "vpp"  # never root
    size_mb = int(e.docker("image", "inspect", "--format", "{{.Size}}", tag)) / 1e6
    record_property("measured", f"image {size_mb:.0f} MB; {how}")  # type: ignore[operator]
    # Nothing of the source tree or the wheelhouse is in the image; the package is installed.
    listing = e.docker(
        "run",
        "--rm",
        "--network",
        "none",
        "--entrypoint",
        "sh",
        tag,
        "-c",
        "ls -d /wheelhouse /tmp/build /opt/vpp/bin/pip 2>/dev/null; "
        "find / -xdev -name pyproject.toml -path '*vpp*' 2>/dev/null; "
        "python -c 'import vpp_aggregator, sys; print(vpp_aggregator.__file__)'",
    )
    assert listing.splitlines() == [
        "/opt/vpp/lib/python3.11/site-packages/vpp_aggregator/__init__.py"
    ], listing

    secret = secrets.token_hex(32)
    port = free_port()
    volume = f"vpp-test-{secrets.token_hex(4)}"
    name = f"vpp-test-{secrets.token_hex(4)}"
    e.docker(
        "run", "-d", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
        "-v", f"{volume}:/data", "-e", f"PORT={port}", "-e", "VPP_HOST=127.0.0.1",
        "-e", f"VPP_JWT_SECRET={secret}", tag,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, name, e)
        auth = _token(secret)
        assert httpx.get(f"{url}/resources", timeout=10).status_code == 401  # closed by default
        battery = {
            "resource_id": "bess-1",
            "resource_type": "BESS",
            "name": "Depot battery",
            "fleet_id": "depot-1",
            "grid_node": "NODE_A",
            "battery_capacity_kwh": 500.0,
            "max_charge_kw": 250.0,
            "max_discharge_kw": 250.0,
            "v2g_capable": True,
            "telemetry_enabled": True,
            "interconnection": {"approved": True, "reference": "IA-1"},
            "min_soc_pct": 20.0,
        }
        r = httpx.post(f"{url}/resources/register", json=battery, headers=auth, timeout=30)
        assert r.status_code == 201, r.text
        sample = {
            "resource_id": "bess-1",
            "timestamp": datetime.now(UTC).isoformat(),
            "soc_pct": 80.0,
            "plugged_in": True,
            "power_kw": 0.0,
        }
        r = httpx.post(f"{url}/telemetry", json={"samples": [sample]}, headers=auth, timeout=30)
        assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
        capacity = httpx.get(f"{url}/capacity/available", headers=auth, timeout=30).json()
        # 500 kWh × (80 % − 20 % floor) × √0.9 at the grid connection; 250 kW for the hour.
        assert capacity["discharge"]["kw"] == pytest.approx(250.0)
        assert capacity["discharge"]["kwh"] == pytest.approx(300 * 0.9**0.5, abs=0.01)
        # Models go to the volume, which a read-only root leaves writable.
        status = httpx.get(f"{url}/forecast/model", headers=auth, timeout=30)
        assert status.json()["model_dir"] == "/data/models", status.text

        began = time.monotonic()
        e.docker("stop", "--time", "60", name, timeout=120)
        stopped_s = time.monotonic() - began
        state = json.loads(e.docker("inspect", name))[0]["State"]
        logs = subprocess.run(["docker", "logs", name], env=e.env(), capture_output=True, text=True)
        # SIGTERM reached the server (exec'd by the entrypoint) and it shut down by itself: 0,
        # not the 137 of a kill when the stop timeout runs out.
        assert state["ExitCode"] == 0 and stopped_s < 50, logs.stdout[-2000:] + logs.stderr[-2000:]
        record_property("measured", f"clean stop in {stopped_s:.1f} s")  # type: ignore[operator]

        # The data survives the container: a new one on the same volume knows the battery.
        e.docker("rm", name)
        e.docker(
            "run", "-d", "--name", name, "--network", "host", "--read-only", "--tmpfs", "/tmp",
            "-v", f"{volume}:/data", "-e", f"PORT={port}", "-e", "VPP_HOST=127.0.0.1",
            "-e", f"VPP_JWT_SECRET={secret}", tag,
        )  # fmt: skip
        _wait_healthy(url, name, e)
        again = httpx.get(f"{url}/resources/bess-1", headers=auth, timeout=30)
        assert again.status_code == 200 and again.json()["telemetry"]["soc_pct"] == 80.0
    finally:
        e.docker("rm", "-f", name, check=False)
        e.docker("volume", "rm", "-f", volume, check=False)


def test_without_a_secret_the_image_refuses_to_listen(
    docker_engine: Engine, image: tuple[str, str]
) -> None:
    tag, _ = image
    done = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp",
         "-e", "VPP_MIGRATE_ON_START=0", tag],
        env=docker_engine.env(), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode != 0
    assert "VPP_JWT_SECRET" in done.stdout + done.stderr


def test_compose_file_reads_in_compose_v1_and_needs_a_secret() -> None:
    """Compose v1 (Debian's docker-compose 1.29) reads the file; without VPP_JWT_SECRET it
    refuses and names it."""
    binary = "docker-compose"
    if subprocess.run(["which", binary], capture_output=True).returncode != 0:
        pytest.skip("docker-compose (Compose v1) is not installed")
    env = {k: v for k, v in os.environ.items() if k != "VPP_JWT_SECRET"}
    args = [binary, "--project-directory", str(ROOT), "-f", str(ROOT / "docker-compose.yml")]
    refused = subprocess.run([*args, "config", "-q"], env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "VPP_JWT_SECRET" in refused.stderr
    ok = subprocess.run(
        [*args, "config"],
        env={**env, "VPP_JWT_SECRET": secrets.token_hex(32), "PORT": "3111"},
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    vpp = yaml.safe_load(ok.stdout)["services"]["vpp"]
    assert [(int(p["published"]), int(p["target"])) for p in vpp["ports"]] == [(3111, 3111)]
    assert str(vpp["environment"]["PORT"]) == "3111"


def test_compose_runs_the_kafka_the_tests_run() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert "name" not in compose  # Compose v1 refuses a top-level name
    assert compose["services"]["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    health = " ".join(compose["services"]["vpp"]["healthcheck"]["test"])
    assert "PORT" in health and "3003/health" not in health
