"""Writing the audit log from a request: who (token subject and role), what, when, from where."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from vpp_aggregator.adapters.api.auth import Principal, _principal, client_address
from vpp_aggregator.adapters.store.audit_repository import AuditRepository


class Auditor:
    def __init__(self, request: Request, who: Principal) -> None:
        self.repo: AuditRepository = request.app.state.audit
        self.clock = request.app.state.aggregator.clock
        self.who = who
        self.remote = client_address(request)

    def record(
        self,
        action: str,
        target: str | None,
        detail: dict[str, Any] | None = None,
        fleet_id: str | None = None,
    ) -> None:
        self.repo.append(
            {
                "at": self.clock(),
                "actor": self.who.subject,
                "role": self.who.role,
                "fleet_id": fleet_id or self.who.fleet_id,
                "action": action,
                "target": target,
                "remote_addr": self.remote,
                "detail": detail or {},
            }
        )


async def _auditor(request: Request, who: Annotated[Principal, Depends(_principal)]) -> Auditor:
    return Auditor(request, who)


AuditDep = Annotated[Auditor, Depends(_auditor)]
