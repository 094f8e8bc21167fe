"""When the market side acts on its own: offers once per market interval, settlement once an
interval is over. The scheduler calls `run_due` every VPP_MARKET_TICK_SECONDS."""

from __future__ import annotations

from datetime import timedelta

from vpp_aggregator.app.market import MarketService


class MarketCadence:
    def __init__(self, market: MarketService) -> None:
        self.market = market
        self._offered_for = -1  # the market interval last offered for (as a count since 1970)

    def run_due(self) -> None:
        """Offer each interval, at start, and whenever nothing is on offer (a fleet that just
        arrived); then settle what is due."""
        m = self.market
        now = m.clock()
        interval = int(now.timestamp() // (m.interval_minutes * 60))
        nothing = not m.offers(now, now + timedelta(hours=m.horizon_hours), None)
        if interval != self._offered_for or nothing:
            m.generate_offers()
            self._offered_for = interval
        m.settle_due()
