"""The VEN loop: poll the VTN's events and hand each to the demand-response handler, as the
`grid_signals` topic does; an event that disappears from the VTN has been deleted, which the
User Guide (7.9) counts as cancelling it. A VTN that is down is logged and tried again at the
next poll; it never stops the rest of the service."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vpp_aggregator.adapters.openadr.event import read_event
from vpp_aggregator.adapters.openadr.vtn_client import VtnClient, VtnError
from vpp_aggregator.app.dr_events import DemandResponseEvents
from vpp_aggregator.app.dr_reports import DrReports
from vpp_aggregator.log_filter import RepeatFilter

log = logging.getLogger(__name__)
MAX_BACKOFF_S = 600.0  # a VTN down for long is still tried every ten minutes
log.addFilter(RepeatFilter(window_s=300.0))  # a VTN that is down fails every poll


@dataclass
class VenPoller:
    client: VtnClient
    events: DemandResponseEvents
    reports: DrReports | None = None
    ven_name: str = ""  # registered with the VTN, with `resources()` as its resources
    resources: Callable[[], list[str]] = list
    ven_id: str | None = None
    registered: set[str] = field(default_factory=set)
    monotonic: Callable[[], float] = time.monotonic
    poll_every_s: float = 30.0  # the job's interval: backing off skips whole polls
    resume_at: float = 0.0  # after failures, no poll before this (monotonic seconds)
    known: set[str] = field(default_factory=set)  # event ids the VTN showed at the last poll
    polls: int = 0
    failures: int = 0
    reports_sent: int = 0
    streak: int = 0  # failed polls in a row
    side_failures: int = 0  # registrations, reports and single events that failed
    last_error: str | None = None

    def poll(self) -> int:
        """One poll: every event read and acted on (idempotent: an unchanged one is a
        duplicate); those the VTN no longer has (404) cancelled. One event's trouble is logged
        and never stops the others. Returns how many events the VTN showed."""
        if self.monotonic() < self.resume_at:
            return 0  # backing off after failures
        try:
            raw_events = self.client.events()
        except VtnError as exc:
            self.failures += 1
            self.streak += 1
            self.last_error = str(exc)
            wait = min(MAX_BACKOFF_S, self.poll_every_s * 2 ** (self.streak - 1))
            self.resume_at = self.monotonic() + wait
            log.warning("VTN poll failed (next in %.0f s): %s", wait, exc)
            return 0
        self.polls += 1
        self.streak = 0
        self.last_error = None
        seen: set[str] = set()
        for raw in raw_events:
            if isinstance(raw, dict) and isinstance(raw.get("id"), str):
                seen.add(raw["id"])  # shown, whether or not it can be read
            try:
                event = read_event(raw)
                seen.add(event.event_id)
                self.events.handle(event, raw)
                self._report(event.event_id, raw)
            except Exception as exc:  # this event only: the others still go
                self.side_failures += 1
                log.warning("VTN event not handled: %s: %s", type(exc).__name__, exc)
        for event_id in sorted(self.known - seen):
            if self.client.gone(event_id):  # deleted (404), not only missing from a list
                self.events.deleted(event_id)
            else:
                seen.add(event_id)
        self.known = seen
        try:
            self._register()
        except Exception as exc:  # tried again next poll; the events went already
            self.side_failures += 1
            log.warning("VEN registration failed: %s: %s", type(exc).__name__, exc)
        return len(seen)

    def _register(self) -> None:
        """The VEN (found by its name, else created: `VEN_VEN_REQUEST`) and every resource of
        ours not yet registered (`VEN_RESOURCE_REQUEST`), once each; a VTN that already has
        them (another replica registered them) is taken as it is."""
        if not self.ven_name:
            return
        if self.ven_id is None:
            found = self.client.get("vens", {"venName": self.ven_name})
            listed = found if isinstance(found, list) else []
            mine = [v for v in listed if isinstance(v, dict) and v.get("venName") == self.ven_name]
            ven = (
                mine[0]
                if mine
                else self.client.post(
                    "vens", {"objectType": "VEN_VEN_REQUEST", "venName": self.ven_name}
                )
            )
            self.ven_id = str(ven["id"])
            known = self.client.get("resources", {"venID": self.ven_id})
            self.registered = {
                str(r["resourceName"]) for r in known if isinstance(r, dict) and "resourceName" in r
            }
        for name in sorted(set(self.resources()) - self.registered):
            self.client.post(
                "resources",
                {"objectType": "VEN_RESOURCE_REQUEST", "resourceName": name, "venID": self.ven_id},
            )
            self.registered.add(name)

    def _report(self, event_id: str, raw: object) -> None:
        """The event's report, once its last interval is over (sent once per version)."""
        body = self.reports.due(raw) if self.reports is not None else None
        if body is None or self.reports is None:
            return
        try:
            self.client.post("reports", body)
        except VtnError as exc:
            self.side_failures += 1
            log.warning("report for %s not taken: %s", event_id, exc)
            return
        self.reports.sent(event_id)
        self.reports_sent += 1
