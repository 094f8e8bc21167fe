"""Reaction time: from a grid event's arrival to its first command acknowledged by the broker,
split into stages (docs/architecture.md, "Reaction time, stage by stage").

The path runs through several services on one thread, so the stage is kept in a context
variable: the code at each boundary says which stage begins (`enter`), and whatever ran since the
last boundary counts to the stage that was running. The stages therefore add up to the total
exactly. Each stage's CPU time (this thread's) is kept beside its wall time, so that on a busy
machine computing can be told apart from waiting. Outside a traced event every call here is a no-op (one context-variable read), so the
same code serves POST /dispatch and the follow-through tick untimed. The observer is a port: the
metrics adapter turns each reaction into histograms."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

PARSE, PLAN, SAFETY, OUTBOX, PUBLISH = "parse", "plan", "safety", "outbox", "publish"
STAGES = (PARSE, PLAN, SAFETY, OUTBOX, PUBLISH)


class ReactionObserver(Protocol):
    def observe(
        self, path: str, stages: Mapping[str, float], total_s: float, cpu: Mapping[str, float]
    ) -> None:
        """One event's first command went out: seconds spent in each stage, and in all; and
        of those, the seconds this thread computed (the rest it waited: for the database, the
        broker, or the CPU another thread held)."""
        ...


@dataclass(slots=True)
class _Trace:
    path: str
    observer: ReactionObserver | None
    started: float
    stage: str = PARSE
    since: float = 0.0
    spent: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    cpu_since: float = field(default_factory=time.thread_time)
    cpu: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    done: bool = False


_current: ContextVar[_Trace | None] = ContextVar("vpp_reaction", default=None)


class ReactionTimer:
    """Starts traces; `observer` is set by the metrics adapter (None: timed but not recorded)."""

    def __init__(self) -> None:
        self.observer: ReactionObserver | None = None

    @contextlib.contextmanager
    def trace(self, path: str, received: float | None = None) -> Iterator[None]:
        """Time what runs inside as one event's reaction, from `received` (a
        `time.perf_counter()` reading taken when the event arrived; now when not given)."""
        t0 = time.perf_counter() if received is None else received
        token = _current.set(_Trace(path, self.observer, t0, since=t0))
        try:
            yield
        finally:
            _current.reset(token)


def enter(stage: str) -> None:
    """`stage` begins now (the one before it ends)."""
    t = _current.get()
    if t is None or t.done:
        return
    now, cpu = time.perf_counter(), time.thread_time()
    t.spent[t.stage] += now - t.since
    t.cpu[t.stage] += cpu - t.cpu_since
    t.stage, t.since, t.cpu_since = stage, now, cpu


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """`name` runs inside; the stage that was running before resumes after it."""
    t = _current.get()
    before = t.stage if t is not None else PLAN
    enter(name)
    try:
        yield
    finally:
        enter(before)


def commands_sent() -> None:
    """The broker acknowledged this event's first command(s): the reaction is complete (later
    commands of the same event add nothing)."""
    t = _current.get()
    if t is None or t.done:
        return
    enter(t.stage)
    t.done = True
    if t.observer is not None:
        t.observer.observe(t.path, dict(t.spent), t.since - t.started, dict(t.cpu))
