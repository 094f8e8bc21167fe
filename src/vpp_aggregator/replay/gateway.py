"""The market gateway's side of a replay: what the ISO would clear of the offers the service
sends, so awards come back over the same messages the real gateway uses."""

from __future__ import annotations

from typing import Any

from vpp_aggregator.app.messages import MarketAward


class Gateway:
    """The market gateway's side: it clears `share` of every discharge offer as it arrives."""

    def __init__(self, share: float) -> None:
        self.share = share
        self.pending: list[dict[str, Any]] = []
        self.awarded = 0

    def on_offer(self, _topic: str, _key: str, offer: Any) -> None:
        if offer.get("product", "energy") == "energy" and float(offer.get("max_power_kw", 0)) > 0:
            self.pending.append(dict(offer))

    def awards(self) -> list[MarketAward]:
        out = []
        for o in self.pending:
            kw = round(self.share * float(o["max_power_kw"]), 3)
            if kw <= 0:
                continue
            self.awarded += 1
            out.append(
                MarketAward.model_validate(
                    {
                        "award_id": f"replay-{o['aggregation_id']}-{o['interval_start']}",
                        "aggregation_id": o["aggregation_id"],
                        "interval_start": o["interval_start"],
                        "interval_end": o["interval_end"],
                        "awarded_kw": kw,
                    }
                )
            )
        self.pending = []
        return out
