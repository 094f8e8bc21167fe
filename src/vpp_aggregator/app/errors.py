"""Errors the use cases raise; adapters turn them into HTTP answers."""

from __future__ import annotations

from vpp_aggregator.domain.registration import Violation


class RegistrationRejectedError(Exception):
    def __init__(self, violations: list[Violation]) -> None:
        super().__init__("; ".join(f"{v.field}: {v.message}" for v in violations))
        self.violations = violations


class ResourceNotFoundError(Exception):
    """No resource with that id."""


class ResourceExistsError(Exception):
    """A resource with that id is already registered."""


class DuplicateResourceError(Exception):
    """Raised by a store when a resource id is already taken."""
