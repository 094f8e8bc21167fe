"""The process's periodic work (snapshots, dispatch follow-through, offers, ...) on one
scheduler: each job runs on its own thread at its own interval, so a slow one (a market
interval's offers) never delays another (a dispatch tick); a job that fails is logged and runs
again at its next turn, the others untouched; `stop` ends them all between runs."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Job:
    name: str
    every_s: float
    run: Callable[[], object]
    first_after_s: float | None = None  # None: one interval after the start
    # Failures an operator already sees elsewhere (readiness reports Redis, say): one line
    # each, not a traceback every few seconds.
    quiet: bool = False


@dataclass(slots=True)
class JobStats:
    """What a job has cost so far (on /metrics): a periodic job whose cost grows with the book
    (dispatches followed, say) takes CPU from the reaction to grid events on the same process."""

    runs: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0  # its thread's CPU time
    last_wall_s: float = 0.0


class Scheduler:
    def __init__(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.every_s <= 0:
                raise ValueError(f"job {job.name!r}: every_s must be above 0")
        self.jobs = jobs
        self.failures: dict[str, int] = dict.fromkeys((j.name for j in jobs), 0)
        self.stats: dict[str, JobStats] = {j.name: JobStats() for j in jobs}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._threads = [
            threading.Thread(target=self._loop, args=(job,), name=f"job-{job.name}", daemon=True)
            for job in self.jobs
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 60.0) -> None:
        """Wait for runs under way to finish (a dispatch tick half done would be redone by
        another process only after its lease), at most `timeout_s` in all."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning(
                    "%s still running after %g s; stopping without it", thread.name, timeout_s
                )

    def _loop(self, job: Job) -> None:
        delay = job.every_s if job.first_after_s is None else job.first_after_s
        while not self._stop.wait(delay):
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                job.run()
            except Exception as exc:
                self.failures[job.name] += 1
                if job.quiet:
                    log.warning("%s failed: %s: %s", job.name, type(exc).__name__, exc)
                else:
                    log.exception("%s failed; it runs again in %g s", job.name, job.every_s)
            stats = self.stats[job.name]
            stats.last_wall_s = time.perf_counter() - wall
            stats.runs += 1
            stats.wall_s += stats.last_wall_s
            stats.cpu_s += time.thread_time() - cpu
            delay = job.every_s
