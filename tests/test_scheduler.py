"""The background work runs on one scheduler: each job at its interval, a failing job logged and
retried without stopping the others, and a stop that ends every job's thread."""

from __future__ import annotations

import threading
import time

import pytest

from vpp_aggregator.scheduler import Job, Scheduler


def test_a_failing_job_is_logged_and_the_others_keep_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = {"ok": 0, "bad": 0}

    def ok() -> None:
        runs["ok"] += 1

    def bad() -> None:
        runs["bad"] += 1
        raise RuntimeError("store away")

    scheduler = Scheduler([Job("ok", 0.02, ok), Job("bad", 0.02, bad)])
    scheduler.start()
    time.sleep(0.3)
    scheduler.stop()
    assert runs["ok"] >= 5 and runs["bad"] >= 5  # the failing one ran again too
    assert scheduler.failures == {"ok": 0, "bad": runs["bad"]}
    assert "bad failed; it runs again in 0.02 s" in caplog.text
    assert "RuntimeError: store away" in caplog.text  # with its traceback


def test_a_quiet_job_logs_one_line_per_failure(caplog: pytest.LogCaptureFixture) -> None:
    def away() -> None:
        raise ConnectionError("redis away")

    scheduler = Scheduler([Job("capacity keys", 0.02, away, quiet=True)])
    scheduler.start()
    time.sleep(0.1)
    scheduler.stop()
    assert "capacity keys failed: ConnectionError: redis away" in caplog.text
    assert "Traceback" not in caplog.text


def test_the_first_run_waits_an_interval_unless_told_otherwise() -> None:
    at_start, later = threading.Event(), threading.Event()
    scheduler = Scheduler(
        [Job("now", 60.0, at_start.set, first_after_s=0.0), Job("later", 60.0, later.set)]
    )
    scheduler.start()
    assert at_start.wait(2.0)
    assert not later.is_set()
    scheduler.stop()


def test_stop_waits_for_a_run_under_way_and_ends_every_thread() -> None:
    finished = threading.Event()

    def slow() -> None:
        time.sleep(0.2)
        finished.set()

    scheduler = Scheduler([Job("slow", 0.01, slow), Job("idle", 60.0, lambda: None)])
    scheduler.start()
    time.sleep(0.05)  # the slow job is under way
    began = time.monotonic()
    scheduler.stop()
    assert finished.is_set() and time.monotonic() - began < 1.0  # the idle one did not hold it
    assert not [t for t in threading.enumerate() if t.name.startswith("job-")]


def test_an_interval_of_zero_is_refused() -> None:
    with pytest.raises(ValueError, match="every_s must be above 0"):
        Scheduler([Job("spin", 0.0, lambda: None)])


def test_each_job_s_runs_and_cpu_time_are_counted() -> None:
    """What `/metrics` shows as `vpp_job_*`: a job that spends CPU shows it; one that sleeps
    shows wall time but little CPU."""
    done = threading.Event()

    def busy() -> None:
        end = time.thread_time() + 0.05
        while time.thread_time() < end:
            pass
        done.set()

    scheduler = Scheduler(
        [
            Job("busy", 60.0, busy, first_after_s=0.0),
            Job("idle", 60.0, lambda: time.sleep(0.05), 0.0),
        ]
    )
    scheduler.start()
    assert done.wait(30.0)
    scheduler.stop()
    busy_stats, idle_stats = scheduler.stats["busy"], scheduler.stats["idle"]
    assert busy_stats.runs == 1 and idle_stats.runs == 1
    assert busy_stats.cpu_s >= 0.05 and busy_stats.wall_s >= busy_stats.cpu_s * 0.99
    assert idle_stats.wall_s >= 0.05 and idle_stats.cpu_s < 0.04
    assert idle_stats.last_wall_s == idle_stats.wall_s
