"""Writing the audit log from a request: who (token subject and role), what, when, from where."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from vpp_aggregator.adapters.api.auth import Principal, _principal, client_address
from vpp_aggregator.app.audit import Actor, AuditLog


class Auditor:
    """The audit log with this request's caller as the actor."""

    def __init__(self, request: Request, who: Principal) -> None:
        self.log: AuditLog = request.app.state.aggregator.audit
        self.actor = Actor(who.subject, who.role, who.fleet_id, client_address(request))

    def record(
        self,
        action: str,
        target: str | None,
        detail: dict[str, Any] | None = None,
        fleet_id: str | None = None,
    ) -> None:
        self.log.record(self.actor, action, target, detail, fleet_id)


async def _auditor(request: Request, who: Annotated[Principal, Depends(_principal)]) -> Auditor:
    return Auditor(request, who)


AuditDep = Annotated[Auditor, Depends(_auditor)]
