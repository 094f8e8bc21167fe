"""The shipped configuration is closed by default: loopback unless told otherwise, and no open
admin API on a reachable address unless the operator says so out loud."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import _free_port
from vpp_aggregator.cli import app
from vpp_aggregator.config import load_settings

CLI = Path(sys.executable).parent / "vpp-aggregator"


def test_the_default_bind_is_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VPP_HOST", raising=False)
    monkeypatch.delenv("HOST", raising=False)
    assert load_settings().host == "127.0.0.1"


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_reachable_bind_without_authentication_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("VPP_HOST", "0.0.0.0")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'x.db'}")
    monkeypatch.setenv("KAFKA_BROKERS", "127.0.0.1:1")
    for var in ("VPP_JWT_SECRET", "VPP_JWT_PUBLIC_KEY", "VPP_ALLOW_INSECURE"):
        monkeypatch.delenv(var, raising=False)
    result = CliRunner().invoke(app, [command])
    assert result.exit_code == 2
    said = " ".join(result.output.split())
    assert "refusing to listen on 0.0.0.0 without authentication" in said
    assert "VPP_ALLOW_INSECURE=1" in said


def test_an_open_bind_allowed_out_loud_starts_and_says_so(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "VPP_HOST": "0.0.0.0",
        "VPP_ALLOW_INSECURE": "1",
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}",
        "VPP_MARKET_ENABLED": "false",
        "VPP_FORECAST_RETRAIN_HOURS": "0",
        "VPP_MODEL_DIR": str(tmp_path / "m"),
    }
    for var in ("VPP_JWT_SECRET", "VPP_JWT_PUBLIC_KEY", "KAFKA_BROKERS", "REDIS_URL"):
        env.pop(var, None)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(CLI), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        from kafka_helpers import wait_healthy

        wait_healthy(port)
        said = " ".join(log.read_text().split())
        assert "NO authentication; every caller is an admin" in said
        assert f"vpp-aggregator on http://0.0.0.0:{port}" in said
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_compose_will_not_start_without_a_secret() -> None:
    compose = (Path(__file__).parents[1] / "docker-compose.yml").read_text()
    assert "VPP_JWT_SECRET: ${VPP_JWT_SECRET:?" in compose
