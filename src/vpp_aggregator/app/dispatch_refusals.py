"""Devices that refused a command of a dispatch: left out of it for a while, then asked again.

A device gateway's refusal is most often passing (a charger between two states, a busy
controller). A device left out for the rest of a long window leaves the others to cover its
part, or the dispatch short of its target for hours: the night's award delivered at three
quarters of its power, a battery never recharged. So a refused resource is left out of the
dispatch's re-plans for `RETRY_AFTER_S`, then the dispatch is planned again with it, once per
refusal; one that refused `MAX_REFUSALS` commands of a dispatch is not asked again in it.
Kept in memory by the process that follows the dispatch: after a restart a device may be asked
once more than that."""

from __future__ import annotations

from dataclasses import dataclass

RETRY_AFTER_S = 300.0
MAX_REFUSALS = 3


@dataclass(slots=True)
class _Refused:
    count: int
    last_ts: float
    asked_again: bool = False


class Refusals:
    def __init__(self) -> None:
        self._by_dispatch: dict[str, dict[str, _Refused]] = {}

    def record(self, dispatch_id: str, resource_id: str, now_ts: float) -> None:
        book = self._by_dispatch.setdefault(dispatch_id, {})
        known = book.get(resource_id)
        count = 1 if known is None else known.count + 1
        book[resource_id] = _Refused(count, now_ts)

    def left_out(self, dispatch_id: str, now_ts: float) -> list[str]:
        """Resources the dispatch's plans leave out now."""
        return [
            rid
            for rid, r in self._by_dispatch.get(dispatch_id, {}).items()
            if r.count >= MAX_REFUSALS or now_ts - r.last_ts < RETRY_AFTER_S
        ]

    def take_due(self, dispatch_id: str, now_ts: float) -> list[str]:
        """Resources to ask again now (each once per refusal)."""
        due = [
            rid
            for rid, r in self._by_dispatch.get(dispatch_id, {}).items()
            if not r.asked_again and r.count < MAX_REFUSALS and now_ts - r.last_ts >= RETRY_AFTER_S
        ]
        for rid in due:
            self._by_dispatch[dispatch_id][rid].asked_again = True
        return due

    def keep_only(self, dispatch_ids: set[str]) -> None:
        """Forget dispatches no longer followed here."""
        for did in [d for d in self._by_dispatch if d not in dispatch_ids]:
            del self._by_dispatch[did]
