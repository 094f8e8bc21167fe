"""Once a minute per kind of line: while a dependency is down the same failure repeats many times a
second (librdkafka's reconnect attempts, every telemetry batch's Redis write), burying the rest."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

# What changes between repeats of one failure: durations ("after 12ms") and epoch times. Hosts,
# ports and broker ids stay, so a second broker going down is a line of its own.
_VARYING = re.compile(r"\d+(?:\.\d+)?\s*(?:ms|s)\b|\b\d{9,}(?:\.\d+)?\b")


class RepeatFilter(logging.Filter):
    """Lets a line through, then drops lines that differ from it only in durations or times for
    `window_s`; the next one through says how many were dropped."""

    def __init__(self, window_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}  # kind -> (when let through, dropped since)

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        kind = _VARYING.sub("#", text)
        now = self.clock()
        with self._lock:
            since, dropped = self._last.get(kind, (float("-inf"), 0))
            if now - since < self.window_s:
                self._last[kind] = (since, dropped + 1)
                return False
            self._last[kind] = (now, 0)
            if len(self._last) > 1000:  # kinds are few; this only bounds a pathological case
                self._last = {k: v for k, v in self._last.items() if now - v[0] < self.window_s}
        if dropped:
            record.msg = f"{text} ({dropped} more like it in the last {self.window_s:g} s)"
            record.args = ()
        return True
