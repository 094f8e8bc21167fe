"""Replays real driver behaviour through the whole market loop on a simulated clock: forecast,
offers, awards, dispatch, follow-through and settlement, against vehicles that come and go as
the drivers in a sessions file did."""
