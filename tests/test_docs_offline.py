"""/docs and /redoc load nothing from outside the service: every file they name is ours."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.config import load_settings

ASSET_TYPES = {
    ".js": "javascript",
    ".css": "text/css",
    ".png": "image/png",
    ".json": "application/json",
}
# src=, href= and the spec URL the page script is given (url: '...', spec-url="...")
REFERENCE = re.compile(r"""(?:src|href|url|spec-url)\s*[=:]\s*["']([^"']+)["']""")


@pytest.fixture
def client(tmp_path) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    settings = load_settings(DATABASE_URL=f"sqlite:///{tmp_path / 'd.db'}")
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_only_same_origin_files(client: TestClient, page: str) -> None:
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "://" not in r.text, "the page names another origin"
    # and whatever the bundled scripts try, the browser is told to fetch nothing from elsewhere
    assert "default-src 'self'" in r.headers["content-security-policy"]
    urls = REFERENCE.findall(r.text)
    assets = [u for u in urls if u.rsplit(".", 1)[-1] in ("js", "css", "png")]
    assert any(u.endswith(".js") for u in assets) and "/openapi.json" in urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        got = client.get(url)
        kind = ASSET_TYPES["." + url.rsplit(".", 1)[-1]]
        assert got.status_code == 200, url
        assert kind in got.headers["content-type"], (url, got.headers["content-type"])
        assert len(got.content) > 1000, url
