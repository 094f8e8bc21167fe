"""The reaction time of a grid event, by stage (docs/architecture.md, "Reaction time, stage by
stage"): every event that sends a command is timed once, its stages add up to its total, and an
event that sends nothing is not counted."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from conftest import Clock
from test_openadr_events import fleet, handle, setpoint_event
from vpp_aggregator.app import reaction
from vpp_aggregator.app.reaction import STAGES, ReactionTimer


class Seen:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, float], float, dict[str, float]]] = []

    def observe(
        self, path: str, stages: Mapping[str, float], total_s: float, cpu: Mapping[str, float]
    ) -> None:
        self.calls.append((path, dict(stages), total_s, dict(cpu)))


def test_stages_add_up_to_the_total_and_only_the_first_commands_count() -> None:
    timer = ReactionTimer()
    seen = timer.observer = Seen()
    with timer.trace("grid_signals"):
        reaction.enter(reaction.PLAN)
        with reaction.stage(reaction.SAFETY):
            sum(range(10_000))
        with reaction.stage(reaction.OUTBOX):
            pass
        reaction.enter(reaction.PUBLISH)
        reaction.commands_sent()
        reaction.commands_sent()  # a second dispatch of the same event: already counted
        reaction.enter(reaction.PLAN)  # after the first commands: no effect
    [(path, stages, total, cpu)] = seen.calls
    assert path == "grid_signals" and set(stages) == set(STAGES) == set(cpu)
    assert stages["safety"] > 0 and all(v >= 0 for v in stages.values())
    assert sum(stages.values()) == pytest.approx(total, abs=1e-9)
    assert all(cpu[s] >= 0 for s in STAGES) and cpu["safety"] > 0


def test_outside_a_trace_nothing_is_timed() -> None:
    timer = ReactionTimer()
    seen = timer.observer = Seen()
    with reaction.stage(reaction.SAFETY):
        reaction.commands_sent()
    with timer.trace("http"):
        pass  # an event that sent no command
    assert seen.calls == []


@pytest.fixture
def client(tmp_path: Path, clock: Clock) -> Iterator[TestClient]:
    yield from fleet(tmp_path, clock)


def histogram(client: TestClient, name: str) -> dict[tuple[str, str], tuple[float, float]]:
    """(path, stage) -> (count, sum) of a histogram on /metrics (stage '' for the total)."""
    text = client.get("/metrics").text
    out: dict[tuple[str, str], list[float]] = {}
    for part, labels, value in re.findall(rf"^{name}_(count|sum)\{{([^}}]*)\}} (\S+)$", text, re.M):
        fields = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        key = (fields["path"], fields.get("stage", ""))
        out.setdefault(key, [0.0, 0.0])[part == "sum"] = float(value)
    return {k: (v[0], v[1]) for k, v in out.items()}


def test_each_event_that_commands_is_timed_by_stage_on_metrics(
    client: TestClient, clock: Clock
) -> None:
    v1 = setpoint_event("evt-t", 100.0, modificationDateTime="2026-11-25T11:00:00Z")
    answer = client.post("/dr/events", json=v1).json()
    assert answer["outcomes"][0]["outcome"] == "dispatched"
    assert client.post("/dr/events", json=v1).json()["outcomes"][0]["outcome"] == "duplicate"
    stages = histogram(client, "vpp_reaction_stage_seconds")
    [(count, total)] = histogram(client, "vpp_reaction_seconds").values()
    assert count == 1  # the duplicate sent nothing
    assert {s for (p, s) in stages if p == "http"} == set(STAGES)
    assert all(n == 1 for n, _ in stages.values())
    assert stages[("http", "safety")][1] > 0 and stages[("http", "outbox")][1] > 0
    assert sum(s for _, s in stages.values()) == pytest.approx(total, rel=1e-6)
    cpu = histogram(client, "vpp_reaction_stage_cpu_seconds")
    assert set(cpu) == set(stages) and all(n == 1 for n, _ in cpu.values())
    # The topic's path: an update re-plans in place, a cancellation ramps down; both command.
    clock.advance(minutes=2)
    v2 = setpoint_event("evt-t", 200.0, modificationDateTime="2026-11-25T11:30:00Z")
    assert [o.outcome for o in handle(client, v2)] == ["replanned"]
    clock.advance(minutes=2)
    cancel = {**v2, "intervalPeriod": {"start": "0001-01-01", "duration": "PT0S"},
              "modificationDateTime": "2026-11-25T12:00:00Z"}  # fmt: skip
    assert [o.outcome for o in handle(client, cancel)] == ["cancelled"]
    totals = histogram(client, "vpp_reaction_seconds")
    assert totals[("grid_signals", "")][0] == 2 and totals[("http", "")][0] == 1
