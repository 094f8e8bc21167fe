"""The README's API examples work pasted in order into a shell against a fresh service: every
`curl` of them answers 2xx (a 4xx or 5xx stops the walk and fails the test)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from conftest import _free_port
from kafka_helpers import wait_healthy

ROOT = Path(__file__).parents[1]
CLI = Path(sys.executable).parent / "vpp-aggregator"


def api_examples() -> list[str]:
    """The bash blocks from `## API` to `## Configuration` an operator pastes into a shell
    against the running service (not the ones that start processes or need a secret)."""
    text = (ROOT / "README.md").read_text()
    api = text[text.index("\n## API\n") : text.index("\n## Configuration\n")]
    blocks = re.findall(r"```bash\n(.*?)```", api, flags=re.S)
    return [b for b in blocks if ".venv/" not in b and "export " not in b]


def test_the_api_examples_are_many_and_in_paste_order() -> None:
    blocks = api_examples()
    assert len(blocks) >= 10
    joined = "\n".join(blocks)
    # Deactivating comes after everything that uses the resource.
    assert joined.index("-X DELETE") > joined.index("/market/awards")
    assert joined.index("/telemetry") < joined.index("/dispatch")


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_the_readme_api_examples_run_in_order_against_a_fresh_service(tmp_path: Path) -> None:
    port = _free_port()
    env = {
        **os.environ,
        "PORT": str(port),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'walk.db'}",
        "VPP_MODEL_DIR": str(tmp_path / "models"),
    }
    for var in ("VPP_JWT_SECRET", "VPP_JWT_PUBLIC_KEY", "KAFKA_BROKERS", "REDIS_URL", "VPP_HOST"):
        env.pop(var, None)
    subprocess.run([str(CLI), "migrate"], env=env, check=True, capture_output=True, timeout=300)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        service = subprocess.Popen(
            [str(CLI), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_healthy(port)
        script = "\n".join(
            [
                "set -euo pipefail",
                'curl() { command curl -sS --fail-with-body --max-time 60 "$@"; echo; }',
                *(b.replace("localhost:3003", f"127.0.0.1:{port}") for b in api_examples()),
            ]
        )
        walk = subprocess.run(
            ["bash", "-c", script],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert walk.returncode == 0, walk.stdout[-3000:] + walk.stderr[-3000:]
        said = walk.stdout
        assert '"accepted":2' in said  # both resources' telemetry
        assert '"status":"cancelled"' in said  # the dispatch, cancelled
        assert '"award_id":"aw-1"' in said
        assert (
            '"status":"inactive"' in said
            or "inactive" in httpx.get(f"http://127.0.0.1:{port}/resources/bus-07", timeout=10).text
        )
    finally:
        service.terminate()
        service.wait(timeout=30)
