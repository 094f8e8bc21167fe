"""Register, change and deactivate resources; the registry and the live state move together."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from vpp_aggregator.app.errors import (
    DuplicateResourceError,
    RegistrationRejectedError,
    ResourceExistsError,
    ResourceNotFoundError,
)
from vpp_aggregator.app.events import EventBus, ResourcesChanged
from vpp_aggregator.app.ports import ResourceStore
from vpp_aggregator.domain.fleet_state import FleetState
from vpp_aggregator.domain.registration import check_registration
from vpp_aggregator.domain.resources import Resource, ResourceStatus


@dataclass(frozen=True, slots=True)
class Refused:
    """One registration of a batch that was not taken, with every reason."""

    index: int
    resource_id: str | None
    errors: list[tuple[str, str]]  # (field, message)


ALREADY = ("resource_id", "already registered")


class RegistryService:
    def __init__(
        self,
        repo: ResourceStore,
        state: FleetState,
        bess_min_soc_pct: float,
        clock: Callable[[], datetime],
        events: EventBus,
    ) -> None:
        self.repo = repo
        self.state = state
        self.bess_min_soc_pct = bess_min_soc_pct
        self.clock = clock
        self.events = events  # `ResourcesChanged`: running dispatches, other replicas

    def _changed(self, resource_ids: list[str]) -> None:
        self.events.publish(ResourcesChanged(resource_ids))

    def reload(self, resource_id: str) -> None:
        """Another process changed this resource: take the stored record into the live state."""
        resource = self.repo.get(resource_id)
        if resource is not None:
            self.state.upsert(resource, self.clock())

    @staticmethod
    def new_id(resource: Resource) -> str:
        return f"{resource.resource_type.value.lower()}-{uuid.uuid4().hex[:12]}"

    def register(self, resource: Resource) -> Resource:
        if not resource.resource_id:
            resource = replace(resource, resource_id=self.new_id(resource))
        violations = check_registration(resource, self.bess_min_soc_pct)
        if violations:
            raise RegistrationRejectedError(violations)
        now = self.clock()
        resource = replace(resource, status=ResourceStatus.ACTIVE, created_at=now, updated_at=now)
        try:
            self.repo.add(resource)
        except DuplicateResourceError:
            raise ResourceExistsError(resource.resource_id) from None
        self.state.upsert(resource, now)
        self._changed([resource.resource_id])
        return resource

    def register_batch(
        self, items: Sequence[tuple[int, Resource]]
    ) -> tuple[list[Resource], list[Refused]]:
        """Register what passes, refuse the rest with every reason: never all-or-nothing.
        Each is checked as one registration is; an id registered before (or twice in the batch)
        is refused. The ones taken are stored in one transaction."""
        now = self.clock()
        ready: list[tuple[int, Resource]] = []
        refused: list[Refused] = []
        seen: set[str] = set()
        for index, resource in items:
            if not resource.resource_id:
                resource = replace(resource, resource_id=self.new_id(resource))
            rid = resource.resource_id
            violations = check_registration(resource, self.bess_min_soc_pct)
            if violations:
                refused.append(Refused(index, rid, [(v.field, v.message) for v in violations]))
            elif rid in seen or rid in self.state:
                refused.append(Refused(index, rid, [ALREADY]))
            else:
                seen.add(rid)
                ready.append(
                    (
                        index,
                        replace(
                            resource, status=ResourceStatus.ACTIVE, created_at=now, updated_at=now
                        ),
                    )
                )
        try:
            self.repo.add_many([r for _, r in ready])
        except DuplicateResourceError:  # one deactivated before, or another process was quicker
            kept = []
            for index, r in ready:
                try:
                    self.repo.add(r)
                    kept.append((index, r))
                except DuplicateResourceError:
                    refused.append(Refused(index, r.resource_id, [ALREADY]))
            ready = kept
        taken = [r for _, r in ready]
        if taken:
            self.state.upsert_many(taken, now)
            self._changed([r.resource_id for r in taken])
        return taken, sorted(refused, key=lambda x: x.index)

    def register_many(self, items: list[Resource]) -> None:
        """Bulk path for seeding large fleets: same rules, one transaction."""
        now = self.clock()
        ready = []
        for resource in items:
            violations = check_registration(resource, self.bess_min_soc_pct)
            if violations:
                raise RegistrationRejectedError(violations)
            ready.append(
                replace(resource, status=ResourceStatus.ACTIVE, created_at=now, updated_at=now)
            )
        try:
            self.repo.add_many(ready)
        except DuplicateResourceError:
            raise ResourceExistsError("one of the resources") from None
        self.state.upsert_many(ready, now)
        self._changed([r.resource_id for r in ready])

    def get(self, resource_id: str) -> Resource:
        resource = self.repo.get(resource_id)
        if resource is None:
            raise ResourceNotFoundError(resource_id)
        return resource

    def change(self, resource_id: str, changes: dict[str, Any]) -> Resource:
        """Apply a PATCH; the changed resource must still satisfy every registration rule."""
        current = self.get(resource_id)
        updated = replace(current, **changes, updated_at=self.clock())
        violations = check_registration(updated, self.bess_min_soc_pct)
        if violations:
            raise RegistrationRejectedError(violations)
        self.repo.save(updated)
        self.state.upsert(updated, self.clock())
        self._changed([resource_id])
        return updated

    def deactivate(self, resource_id: str) -> Resource:
        current = self.get(resource_id)
        updated = replace(current, status=ResourceStatus.INACTIVE, updated_at=self.clock())
        self.repo.save(updated)
        self.state.upsert(updated, self.clock())
        self._changed([resource_id])
        return updated
