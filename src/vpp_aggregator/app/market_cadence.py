"""When the market side acts on its own: offers as each market's gates open (an interval
already offered is left alone, so a tick with nothing new costs one read of the store), and
settlement once an interval is over. The scheduler calls `run_due` every
VPP_MARKET_TICK_SECONDS."""

from __future__ import annotations

from vpp_aggregator.app.market import MarketService


class MarketCadence:
    def __init__(self, market: MarketService) -> None:
        self.market = market

    def run_due(self) -> None:
        self.market.generate_offers()
        self.market.settle_due()
