"""The pages the service serves, end to end: a real server, Debian's headless Chromium via
Playwright. None of them may load anything from another origin (the service must work offline)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from api_helpers import bess_body, ev_body, live_server, sample
from services import in_ci
from vpp_aggregator.config import load_settings

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# A page waits this long for what it should show: parsing Swagger UI's bundle alone took over
# Playwright's 5 s default on a busy 2-core CI machine.
UI_WAIT_MS = 30_000
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'd.db'}",
        VPP_SITE_TIMEZONE="UTC",
        VPP_MODEL_DIR=str(tmp_path / "models"),
        VPP_FORECAST_RETRAIN_HOURS="0",
    )
    with live_server(settings) as url:
        yield url


def _need_chromium() -> None:
    if CHROMIUM is None:
        message = "Debian's chromium is not installed (make test installs it)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)


def _same_origin_only(page: Any, origin: str) -> list[str]:
    """Refuses every request to another origin and lists it, as a machine offline would."""
    outside: list[str] = []

    def check(route: Any) -> None:
        url = route.request.url
        if url == origin or url.startswith(origin + "/"):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    page.route("**/*", check)
    return outside


def test_docs_pages_render_with_nothing_from_outside(server: str) -> None:
    _need_chromium()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_WAIT_MS)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        outside = _same_origin_only(page, server)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server + "/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("VPP Aggregator")
        expect(page.locator(".opblock-summary-path", has_text="/dispatch").first).to_be_visible()
        page.locator(".opblock-summary-path", has_text="/health").first.click()
        page.get_by_role("button", name="Try it out").click()
        page.get_by_role("button", name="Execute").click()  # the page's policy lets it call us
        expect(page.locator(".live-responses-table tbody .response-col_status").first).to_have_text(
            "200"
        )
        page.goto(server + "/redoc")
        expect(page.locator("h1", has_text="VPP Aggregator")).to_be_visible()
        expect(page.get_by_text("/capacity/available").first).to_be_attached()
        browser.close()
    assert outside == []
    assert errors == []


def test_dashboard_shows_the_fleet_and_updates_without_reload(server: str) -> None:
    _need_chromium()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_WAIT_MS)

    now = datetime.now(UTC)
    with httpx.Client(base_url=server, timeout=10) as api:
        for i in range(3):
            api.post(
                "/resources/register", json=bess_body(f"bess-{i}", grid_node="NODE_A")
            ).raise_for_status()
        for i in range(2):
            api.post(
                "/resources/register",
                json=ev_body(f"ev-{i}", grid_node="NODE_B", max_discharge_kw=11.0),
            ).raise_for_status()
        samples = [sample("bess-0", now, 80), sample("bess-1", now, 70), sample("bess-2", now, 15)]
        samples += [sample("ev-0", now, 60), sample("ev-1", now, 60, plugged=False)]
        api.post("/telemetry", json={"samples": samples}).raise_for_status()
        event = {
            "id": "evt-dash",
            "targets": ["NODE_B"],
            "intervalPeriod": {"start": now.isoformat(), "duration": "PT1H"},
            "intervals": [{"id": 0, "payloads": [{"type": "DISPATCH_SETPOINT", "values": [20]}]}],
        }
        answer = api.post("/dr/events", json=event).json()
        assert [o["outcome"] for o in answer["outcomes"]] == ["dispatched"], answer
        api.post(
            "/dispatch", json={"target_kw": 100, "duration_minutes": 30, "grid_node": "NODE_A"}
        ).raise_for_status()
        before = api.get("/capacity/available").json()
        api.post("/market/offers/generate").raise_for_status()

        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1300})
            outside = _same_origin_only(page, server)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server + "/")
            expect(page.locator("#up-kw")).to_have_text(f"{before['discharge']['kw']:,.0f} kW")
            # the unplugged EV is out; the locked-out battery may still charge, so it counts
            expect(page.locator("#available")).to_have_text("4 / 5")
            node_a = page.locator("#by-node tbody tr", has_text="NODE_A")
            expect(node_a).to_contain_text("eligible")
            expect(page.locator("#by-node tbody tr", has_text="NODE_B")).to_contain_text(
                "below 100 kW"
            )
            expect(page.locator("#alerts")).to_contain_text("bess-2: BESS below its floor")
            expect(page.locator("#resources tbody tr")).to_have_count(5)
            expect(page.locator("#resources tbody tr", has_text="ev-1")).to_contain_text(
                "unplugged"
            )
            expect(page.locator("#resources tbody tr", has_text="bess-2")).to_contain_text(
                "charge only: below its floor"
            )
            expect(page.locator("#dispatches tbody tr").first).to_contain_text("manual")
            event_row = page.locator("#dr-events tbody tr", has_text="evt-dash")
            expect(event_row).to_contain_text("DISPATCH_SETPOINT: consume 20 kW")
            expect(event_row).to_contain_text("-20.0")
            expect(event_row).to_contain_text("dispatched dsp-")
            expect(page.locator("#forecast polygon.band")).to_have_count(1)
            expect(page.locator("#dispatch-chart polyline.plan")).to_have_count(1)
            # the market panels: both markets' offers, regulation and settlement (none yet)
            expect(page.locator("#offers tbody tr").first).to_contain_text("NODE_A")
            expect(page.locator("#regulation tbody")).to_contain_text("none")
            expect(page.locator("#settlement tbody")).to_contain_text("none")
            expect(page.locator("#status")).to_contain_text("updated")
            # New telemetry shows up on the open page, without a reload.
            api.post(
                "/telemetry",
                json={"samples": [sample("ev-1", datetime.now(UTC), 60, plugged=True)]},
            ).raise_for_status()
            expect(page.locator("#available")).to_have_text("5 / 5")
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "dashboard.png"
            page.screenshot(path=str(shot), full_page=True)
            browser.close()
    assert shot.stat().st_size > 10_000
    assert errors == []
    assert outside == []
