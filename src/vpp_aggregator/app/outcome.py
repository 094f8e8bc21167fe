"""What a message from another layer came to."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a message came to: the word counted and audited (`dispatched`, `rejected` and
    `expired` as `app/request_status` says, or duplicate | ignored | applied | locked | cleared
    ...), what it concerns (the dispatch id where one was made, audited as the target), and why
    it was `rejected`."""

    outcome: str
    detail: str = ""
    reason: str | None = None
