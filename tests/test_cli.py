"""The command line as an operator meets it: bad configuration is named, migrations run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vpp_aggregator.adapters.store.database import head_revision
from vpp_aggregator.cli import app
from vpp_aggregator.config import ConfigError, load_settings


def test_bad_configuration_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VPP_BESS_MIN_SOC", "150")
    monkeypatch.setenv("PORT", "http")
    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 2
    assert "VPP_BESS_MIN_SOC" in result.output and "PORT" in result.output


def test_database_url_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (
        load_settings(DATABASE_URL="postgres://u@h/db").database_url
        == "postgresql+psycopg://u@h/db"
    )
    assert load_settings().database_url.startswith("sqlite:///")
    with pytest.raises(ConfigError, match="DATABASE_URL"):
        load_settings(DATABASE_URL="mysql://x")


def test_migrate_creates_the_sqlite_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "sub" / "vpp.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{db}")
    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 0, result.output
    assert db.exists() and head_revision() in result.output


def test_no_solver_banner_on_stdout_once_the_service_is_built(tmp_path: Path) -> None:
    """HiGHS prints a banner from its first solver's constructor; stdout is a command's answer."""
    script = (
        "from vpp_aggregator import bootstrap\n"
        "from vpp_aggregator.config import load_settings\n"
        "import highspy\n"
        f"s = bootstrap.build(load_settings(DATABASE_URL='sqlite:///{tmp_path / 'b.db'}',"
        " KAFKA_BROKERS='', REDIS_URL=''))\n"
        "highspy.Highs()\n"
        "s.engine.dispose()\n"
        "print('built')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout == "built\n"
