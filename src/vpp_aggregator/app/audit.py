"""The audit log's one writer: what an entry holds, its time (the service clock), and which
message outcomes an operator must be able to trace. The HTTP routes (a request's caller) and
the message handlers (a topic) both write through it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # the handlers write through this log: no import back at run time
    from vpp_aggregator.app.outcome import Outcome

AUDITED_OUTCOMES = {  # a message outcome that changes something -> the action it is audited as
    "dispatched": "dispatch.create",
    "rejected": "dispatch.create",  # a DR event's or an award's dispatch that found no resource
    "replanned": "dispatch.replan",  # a refused command, or an updated demand-response event
    "cancelled": "dispatch.cancel",  # a cancelled or updated demand-response event
    "locked": "resource.change",
    "cleared": "resource.change",
}


class AuditStore(Protocol):
    def append(self, entry: dict[str, Any]) -> None: ...


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acted: a token's subject and role from an address, or a system source."""

    subject: str
    role: str
    fleet_id: str | None
    address: str | None  # where the request came from; "kafka" for a topic


class AuditLog:
    def __init__(self, store: AuditStore, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock

    def record(
        self,
        actor: Actor,
        action: str,
        target: str | None,
        detail: dict[str, Any] | None = None,
        fleet_id: str | None = None,
    ) -> None:
        self.store.append(
            {
                "at": self.clock(),
                "actor": actor.subject,
                "role": actor.role,
                "fleet_id": fleet_id or actor.fleet_id,
                "action": action,
                "target": target,
                "remote_addr": actor.address,
                "detail": detail or {},
            }
        )

    def record_outcome(self, actor: Actor, outcome: Outcome) -> None:
        """A message's outcome, when it changed something (`AUDITED_OUTCOMES`); its target is
        what the outcome concerns (the dispatch id, the resource)."""
        action = AUDITED_OUTCOMES.get(outcome.outcome)
        if action is None:
            return
        self.record(
            actor,
            action,
            outcome.detail.split(" ")[0],
            {"outcome": outcome.outcome, "detail": outcome.detail, "reason": outcome.reason},
        )
