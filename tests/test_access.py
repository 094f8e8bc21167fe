"""Access control (JWT roles, fleet tokens), the audit log and request limits."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from fastapi.testclient import TestClient

from api_helpers import bess_body, ev_body, sample
from conftest import Clock
from vpp_aggregator.adapters.api import auth as auth_module
from vpp_aggregator.adapters.api.app import create_app
from vpp_aggregator.adapters.api.auth import secret_weakness
from vpp_aggregator.config import ConfigError, load_settings

SECRET = "0123456789abcdef0123456789abcdef-strong-enough"


def token(
    role: str, sub: str = "alice", fleet: str | None = None, secret: str = SECRET, **extra: object
) -> dict[str, str]:
    claims: dict[str, object] = {
        "sub": sub,
        "role": role,
        "exp": datetime.now(UTC) + timedelta(hours=1),
        **extra,
    }
    if fleet:
        claims["fleet_id"] = fleet
    return {"authorization": f"Bearer {jwt.encode(claims, secret, algorithm='HS256')}"}


@pytest.fixture
def secured(tmp_path, clock: Clock) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 's.db'}",
        VPP_JWT_SECRET=SECRET,
        VPP_RATE_LIMIT_PER_MINUTE="0",
    )
    with TestClient(create_app(settings, clock=clock)) as c:
        yield c


def test_roles_decide_who_may_read_act_and_administer(secured: TestClient, clock: Clock) -> None:
    c = secured
    assert c.get("/resources").status_code == 401
    assert c.get("/resources", headers={"authorization": "Bearer nonsense"}).status_code == 401
    assert (
        c.get(
            "/resources", headers=token("admin", secret="another-secret-of-at-least-32-bytes")
        ).status_code
        == 401
    )
    assert c.get("/health").status_code == 200  # probes stay open
    admin, operator, viewer = token("admin"), token("operator", "olga"), token("viewer", "vic")
    assert c.post("/resources/register", json=bess_body(), headers=operator).status_code == 403
    assert c.post("/resources/register", json=bess_body(), headers=admin).status_code == 201
    assert (
        c.post(
            "/telemetry", json={"samples": [sample("bess-1", clock.now, 80)]}, headers=operator
        ).status_code
        == 200
    )
    assert c.get("/capacity/available", headers=viewer).status_code == 200
    body = {"target_kw": 50, "duration_minutes": 15}
    assert c.post("/dispatch", json=body, headers=viewer).status_code == 403
    made = c.post("/dispatch", json=body, headers=operator)
    assert made.status_code == 201
    assert (
        c.post(f"/dispatch/{made.json()['dispatch_id']}/cancel", headers=operator).status_code
        == 200
    )
    assert c.patch("/resources/bess-1", json={"name": "Depot B"}, headers=admin).status_code == 200
    assert c.get("/audit", headers=operator).status_code == 403
    log = c.get("/audit", headers=admin).json()["items"]
    assert [e["action"] for e in log] == [
        "resource.change",
        "dispatch.cancel",
        "dispatch.create",
        "resource.register",
    ]
    assert {(e["actor"], e["role"]) for e in log} == {("alice", "admin"), ("olga", "operator")}
    assert all(e["remote_addr"] and e["at"] for e in log)
    assert log[0]["detail"] == {"fields": ["name"]}


def test_a_fleet_token_sees_and_acts_on_its_own_fleet_only(
    secured: TestClient, clock: Clock
) -> None:
    c = secured
    admin = token("admin")
    c.post("/resources/register", json=ev_body("ev-a", fleet_id="fleet-a"), headers=admin)
    c.post("/resources/register", json=ev_body("ev-b", fleet_id="fleet-b"), headers=admin)
    c.post(
        "/telemetry",
        json={"samples": [sample("ev-a", clock.now, 80), sample("ev-b", clock.now, 80)]},
        headers=admin,
    )
    mine = token("operator", "fleet-a-ops", fleet="fleet-a")
    listed = c.get("/resources", headers=mine).json()
    assert [r["resource_id"] for r in listed["items"]] == ["ev-a"]
    assert c.get("/resources/ev-b", headers=mine).status_code == 404
    assert c.get("/resources", params={"fleet_id": "fleet-b"}, headers=mine).status_code == 403
    cap = c.get("/capacity/available", headers=mine).json()
    assert cap["resource_count"] == 1
    d = c.post("/dispatch", json={"target_kw": 20, "duration_minutes": 15}, headers=mine).json()
    assert {a["resource_id"] for a in d["allocations"]} <= {"ev-a"}
    other = c.post(
        "/dispatch",
        json={"target_kw": 20, "duration_minutes": 15, "fleet_id": "fleet-b"},
        headers=admin,
    ).json()
    assert c.get(f"/dispatch/{other['dispatch_id']}", headers=mine).status_code == 404
    assert c.post(f"/dispatch/{other['dispatch_id']}/cancel", headers=mine).status_code == 404
    assert c.get("/capacity/forecast", headers=mine).status_code == 403  # fleet-wide views
    assert c.post("/telemetry", json={"samples": []}, headers=mine).status_code == 403
    fleet_admin = token("admin", "fleet-a-admin", fleet="fleet-a")
    assert (
        c.post(
            "/resources/register", json=ev_body("ev-x", fleet_id="fleet-b"), headers=fleet_admin
        ).status_code
        == 403
    )
    entries = c.get("/audit", headers=fleet_admin).json()["items"]
    assert entries and all(e["fleet_id"] == "fleet-a" for e in entries)


def test_to_a_fleet_token_another_fleets_things_do_not_exist(
    secured: TestClient, clock: Clock
) -> None:
    c = secured
    admin = token("admin")
    c.post("/resources/register", json=ev_body("ev-a", fleet_id="fleet-a"), headers=admin)
    c.post(
        "/resources/register",
        json=ev_body("ev-b", fleet_id="fleet-b", grid_node="NODE_B"),
        headers=admin,
    )
    c.post(
        "/telemetry",
        json={"samples": [sample("ev-a", clock.now, 80), sample("ev-b", clock.now, 80)]},
        headers=admin,
    )
    mine = token("operator", "fleet-a-ops", fleet="fleet-a")

    def dispatch(**scope: object) -> tuple[int, str]:
        r = c.post(
            "/dispatch", json={"target_kw": 20, "duration_minutes": 15, **scope}, headers=mine
        )
        return r.status_code, r.text

    code, text = dispatch(resource_ids=["ev-b"])
    assert (code, text.replace("ev-b", "ev-none")) == dispatch(resource_ids=["ev-none"])
    assert code == 422
    code, text = dispatch(grid_node="NODE_B")
    assert (code, text.replace("NODE_B", "NODE_NONE")) == dispatch(grid_node="NODE_NONE")
    assert code == 422
    # Registration: resource ids are global device identities (telemetry names a device by its
    # id alone), so a taken id cannot be taken again; the answer is the one a fleet gets for an
    # id of its own and names no fleet.
    fleet_admin = token("admin", "fleet-a-admin", fleet="fleet-a")
    theirs = c.post(
        "/resources/register", json=ev_body("ev-b", fleet_id="fleet-a"), headers=fleet_admin
    )
    own = c.post(
        "/resources/register", json=ev_body("ev-a", fleet_id="fleet-a"), headers=fleet_admin
    )
    assert theirs.status_code == own.status_code == 409
    assert theirs.text.replace("ev-b", "ev-a") == own.text and "fleet-b" not in theirs.text


@pytest.mark.parametrize("fleet_claim", ["", "  ", None, 7])
def test_a_token_with_an_empty_fleet_sees_nothing(secured: TestClient, fleet_claim: object) -> None:
    c = secured
    c.post("/resources/register", json=ev_body("ev-b", fleet_id="fleet-b"), headers=token("admin"))
    empty = token("viewer", "nobody", fleet_id=fleet_claim)
    assert c.get("/resources", headers=empty).status_code == 403
    assert c.get("/resources/ev-b", headers=empty).status_code == 403


@pytest.mark.parametrize(
    ("secret", "reason"),
    [
        ("changeme", "8 bytes, fewer than 32"),
        ("changeme" * 4, "strength score"),  # 32 bytes, but a known default repeated
        ("passwordpasswordpasswordpassword1", "strength score"),
        ("abcdefghijklmnopqrstuvwxyz0123456789", "strength score"),  # a keyboard sequence
    ],
)
def test_a_weak_secret_is_refused_everywhere_without_echoing_it(
    tmp_path: Path, secret: str, reason: str
) -> None:
    for url in (f"sqlite:///{tmp_path / 'w.db'}", "postgresql://postgres@127.0.0.1:5432/none"):
        with pytest.raises(ConfigError, match="VPP_JWT_SECRET is weak") as refused:
            create_app(load_settings(DATABASE_URL=url, VPP_JWT_SECRET=secret))
        assert reason in str(refused.value) and secret not in str(refused.value)


def test_a_random_secret_is_accepted() -> None:
    assert secret_weakness(secrets.token_hex(32)) is None
    assert secret_weakness(secrets.token_urlsafe(32)) is None
    assert secret_weakness(SECRET) is None


def test_body_size_and_rate_limits_answer_with_clear_4xx(tmp_path, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'l.db'}",
        VPP_JWT_SECRET=SECRET,
        VPP_RATE_LIMIT_PER_MINUTE="5",
        VPP_MAX_BODY_BYTES="2048",
    )
    with TestClient(create_app(settings, clock=clock)) as c:
        big = {"samples": [sample(f"ev-{i}", clock.now, 50) for i in range(100)]}
        r = c.post("/telemetry", json=big, headers=token("operator", "gateway"))
        assert r.status_code == 413 and "VPP_MAX_BODY_BYTES" in r.json()["detail"]
        viewer = token("viewer", "busy")
        codes = [c.get("/capacity/available", headers=viewer).status_code for _ in range(7)]
        assert codes[:4] == [200] * 4 and codes[-1] == 429
        limited = c.get("/capacity/available", headers=viewer)
        assert int(limited.headers["retry-after"]) >= 1
        assert (
            c.get("/capacity/available", headers=token("viewer", "someone-else")).status_code == 200
        )


def test_failed_auth_and_metrics_are_throttled_by_address_and_spare_good_tokens(
    tmp_path: Path, clock: Clock
) -> None:
    settings = load_settings(
        DATABASE_URL=f"sqlite:///{tmp_path / 'a.db'}",
        VPP_JWT_SECRET=SECRET,
        VPP_RATE_LIMIT_PER_MINUTE="5",
    )
    app = create_app(settings, clock=clock)
    with TestClient(app, client=("192.0.2.10", 40000)) as attacker:
        scraper = TestClient(app, client=("192.0.2.20", 40000))
        neighbour = TestClient(app, client=("192.0.2.30", 40000))
        bad = {"authorization": "Bearer not-a-token"}
        codes = [attacker.get("/capacity/available", headers=bad).status_code for _ in range(7)]
        assert codes[:4] == [401] * 4 and codes[-1] == 429
        refused = attacker.get("/resources")  # no token at all: the same address pays
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "address" in refused.json()["detail"]
        # a valid signature without a role (403 elsewhere) is a failed attempt too
        assert attacker.get("/resources", headers=token("nobody")).status_code == 429
        # A good token is charged to its subject, wherever it comes from.
        assert attacker.get("/capacity/available", headers=token("viewer")).status_code == 200
        assert neighbour.get("/capacity/available", headers=token("viewer", "n")).status_code == 200
        assert neighbour.get("/resources", headers=bad).status_code == 401  # its own budget
        assert neighbour.get("/resources", headers=token("nobody")).status_code == 403
        scrapes = [scraper.get("/metrics").status_code for _ in range(7)]
        assert scrapes[:4] == [200] * 4 and scrapes[-1] == 429
        assert int(scraper.get("/metrics").headers["retry-after"]) >= 1
        assert scraper.get("/health").status_code == 200  # orchestrators' probes stay open
        assert scraper.get("/health/ready").status_code == 200
        assert attacker.get("/health").status_code == 200


def test_rate_limit_buckets_of_callers_gone_for_a_minute_are_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(auth_module.time, "monotonic", lambda: now[0])
    limiter = auth_module.RateLimiter(per_minute=2)
    for i in range(1000):  # a spray of addresses, each with one bad token
        assert limiter.take(("address", f"2001:db8::{i:x}")) is None
    assert len(limiter) == 1000
    now[0] += auth_module.IDLE_FULL_SECONDS
    assert limiter.take(("token", "alice")) is None
    assert len(limiter) == 1  # the spray no longer holds memory
