"""The layers' rules, checked on the source: the domain is pure, the application layer reaches the
outside only through ports, and tooling (benchmarks, dev services, tests) stays out of the product."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "src" / "vpp_aggregator"
MAX_LINES = 400
FRAMEWORKS = {"fastapi", "starlette", "sqlalchemy", "alembic", "confluent_kafka", "redis", "httpx"}
TOOLING = {"benchmarks", "devservices", "tests", "conftest"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def offenders(folder: str, banned: set[str]) -> dict[str, list[str]]:
    out = {}
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        bad = sorted(
            m for m in imports(path) if any(m == b or m.startswith(b + ".") for b in banned)
        )
        if bad:
            out[str(path.relative_to(PACKAGE))] = bad
    return out


def test_the_domain_imports_no_framework_adapter_or_service() -> None:
    banned = FRAMEWORKS | {"vpp_aggregator.adapters", "vpp_aggregator.app", "pydantic"}
    assert offenders("domain", banned) == {}


def test_the_application_layer_imports_no_adapter_or_framework() -> None:
    assert offenders("app", FRAMEWORKS | {"vpp_aggregator.adapters"}) == {}


def test_the_product_imports_no_tooling() -> None:
    assert offenders(".", TOOLING) == {}


def test_no_module_of_the_product_is_longer_than_400_lines() -> None:
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
