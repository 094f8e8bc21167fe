"""The replay's only clock, and the service's periodic jobs run on it instead of threads."""

from __future__ import annotations

from datetime import UTC, datetime

from vpp_aggregator.scheduler import Job


class SimClock:
    """Simulated time, moved only by the replay; every component of the service reads it."""

    def __init__(self, start_ts: float) -> None:
        self.ts = float(start_ts)

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.ts, UTC)

    def advance_to(self, ts: float) -> None:
        if ts < self.ts:
            raise ValueError("simulated time never runs backwards")
        self.ts = float(ts)


class SimJobs:
    """The service's jobs (`bootstrap.jobs`), each run when simulated time reaches its turn, in
    the order they are listed; a job that fails is raised, since a replay's figures would be
    wrong without it."""

    def __init__(self, jobs: list[Job], clock: SimClock) -> None:
        self.jobs = jobs
        self.due = [
            clock.ts + (j.every_s if j.first_after_s is None else j.first_after_s) for j in jobs
        ]
        self.clock = clock

    def run_due(self) -> int:
        ran = 0
        for k, job in enumerate(self.jobs):
            if self.due[k] <= self.clock.ts + 1e-9:
                job.run()
                ran += 1
                # On the grid of its interval from the start, as the scheduler keeps it.
                while self.due[k] <= self.clock.ts + 1e-9:
                    self.due[k] += job.every_s
        return ran
