"""The dependency audit (`make audit`): our pins pass, and a vulnerable or unaudited pin fails it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "audit_deps.py"


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60
    )


def test_every_pin_of_both_locks_is_audited_and_none_is_known_vulnerable() -> None:
    result = _run(ROOT / "requirements.lock", ROOT / "requirements-dev.lock")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no known-vulnerable pins" in result.stdout


def test_old_releases_with_published_advisories_are_flagged(tmp_path: Path) -> None:
    lock = tmp_path / "old.lock"
    lock.write_text(
        "urllib3==1.26.0 \\\n    --hash=sha256:00\n"  # pip-compile's layout
        "starlette==0.25.0\nredis==8.1.0\nidna==3.20\n"
    )
    result = _run(lock)
    assert result.returncode == 1
    flagged = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("VULN")}
    assert flagged == {"urllib3==1.26.0:", "starlette==0.25.0:"}
    # The withdrawn redis record and idna's superseded import draft are not findings.
    assert "redis" not in result.stdout.split("\n", 1)[1]


def test_a_range_closed_by_last_affected_and_a_new_dependency_not_yet_audited(
    tmp_path: Path,
) -> None:
    snapshot = {
        "source": "test",
        "packages_checked": ["gridlib"],
        "advisories": [
            {
                "id": "TEST-1",
                "package": "GridLib",
                "aliases": [],
                "ranges": [
                    {
                        "type": "ECOSYSTEM",
                        "events": [{"introduced": "2.0"}, {"last_affected": "2.3"}],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "snapshot.json"
    path.write_text(json.dumps(snapshot))
    verdicts = {}
    for version in ("1.9", "2.0", "2.3", "2.3.1"):
        lock = tmp_path / f"{version}.lock"
        lock.write_text(f"gridlib=={version}\n")
        verdicts[version] = _run(lock, "--snapshot", path).returncode
    assert verdicts == {"1.9": 0, "2.0": 1, "2.3": 1, "2.3.1": 0}
    lock = tmp_path / "new.lock"
    lock.write_text("gridlib==1.0\nnewdep==0.1\n")
    result = _run(lock, "--snapshot", path)
    assert result.returncode == 1
    assert "NOT AUDITED newdep==0.1" in result.stdout


@pytest.mark.parametrize("name", ["Py.JWT", "py_jwt", "PY-JWT"])
def test_names_are_compared_normalized(tmp_path: Path, name: str) -> None:
    snapshot = {
        "packages_checked": ["py-jwt"],
        "advisories": [
            {
                "id": "T",
                "package": "Py.JWT",
                "ranges": [{"type": "ECOSYSTEM", "events": [{"fixed": "2.0"}]}],
            }
        ],
    }
    path = tmp_path / "s.json"
    path.write_text(json.dumps(snapshot))
    lock = tmp_path / "l.lock"
    lock.write_text(f"{name}==1.0\n")
    result = _run(lock, "--snapshot", path)
    assert result.returncode == 1
    assert "VULNERABLE py-jwt==1.0: T" in result.stdout


def test_refresh_from_an_advisory_database_checkout(tmp_path: Path) -> None:
    folder = tmp_path / "db" / "vulns" / "GridLib"
    folder.mkdir(parents=True)
    (folder / "PYSEC-2099-1.yaml").write_text(
        "id: PYSEC-2099-1\nmodified: '2099-01-02T00:00:00Z'\naliases: [CVE-2099-1]\n"
        "affected:\n- package: {name: gridlib, ecosystem: PyPI}\n"
        "  ranges:\n  - type: GIT\n    events: [{introduced: abc}]\n"
        "  - type: ECOSYSTEM\n    events: [{introduced: '0'}, {fixed: '3.1'}]\n"
    )
    lock = tmp_path / "l.lock"
    lock.write_text("gridlib==3.0\nother==1.0\n")
    snapshot = tmp_path / "s.json"
    result = _run(lock, "--snapshot", snapshot, "--refresh-from", tmp_path / "db")
    assert "VULNERABLE gridlib==3.0: PYSEC-2099-1 (fixed in 3.1)" in result.stdout
    assert result.returncode == 1
    written = json.loads(snapshot.read_text())
    assert written["packages_checked"] == ["gridlib", "other"]
    assert written["newest_modified"] == "2099-01-02T00:00:00Z"
    assert written["advisories"][0]["ranges"] == [
        {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "3.1"}]}
    ]
    lock.write_text("gridlib==3.1\nother==1.0\n")
    assert _run(lock, "--snapshot", snapshot).returncode == 0
