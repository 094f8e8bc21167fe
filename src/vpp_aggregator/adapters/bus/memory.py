"""In-process bus: subscribers are called synchronously; recent messages are kept for inspection."""

from __future__ import annotations

import threading
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

Handler = Callable[[str, str, Mapping[str, Any]], None]


class InProcessBus:
    """`keep_last` messages per topic stay readable for inspection; commands carry whole
    schedules (tens of kB as Python objects), so the window is kept small."""

    def __init__(self, keep_last: int = 1_000) -> None:
        self._lock = threading.Lock()
        self._subscribers: dict[str, list[Handler]] = defaultdict(list)
        self._recent: dict[str, deque[tuple[str, Mapping[str, Any]]]] = defaultdict(
            lambda: deque(maxlen=keep_last)
        )
        self.published = 0

    def publish(self, topic: str, key: str, payload: Mapping[str, Any]) -> None:
        with self._lock:
            self._recent[topic].append((key, payload))
            self.published += 1
            handlers = list(self._subscribers[topic])
        for handler in handlers:
            handler(topic, key, payload)

    def publish_many(
        self, topic: str, items: Sequence[tuple[str, Mapping[str, Any]]]
    ) -> list[bool]:
        for key, payload in items:
            self.publish(topic, key, payload)
        return [True] * len(items)

    def subscribe(self, topic: str, handler: Handler) -> None:
        with self._lock:
            self._subscribers[topic].append(handler)

    def recent(self, topic: str) -> list[tuple[str, Mapping[str, Any]]]:
        with self._lock:
            return list(self._recent[topic])
