"""What the real-time offers keep back for what is committed around each interval
(`app/offer_energy.committed_around`, README "Two markets")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from vpp_aggregator.app.offer_energy import committed_around

T0 = datetime(2026, 11, 24, 23, 0, tzinfo=UTC)
MIN5 = timedelta(minutes=5)


def _midnight_after(t: datetime) -> datetime:
    return datetime.combine(t.date() + timedelta(days=1), datetime.min.time(), UTC)


def test_an_interval_keeps_back_only_what_its_own_day_commits_after_it() -> None:
    # The 25th's 02:00 award is no business of the 24th's last intervals, 23:55 included,
    # whose end falls on the 25th.
    award = (datetime(2026, 11, 25, 2, tzinfo=UTC), datetime(2026, 11, 25, 3, tzinfo=UTC), 100.0)
    starts = [
        datetime(2026, 11, 24, 23, 50, tzinfo=UTC),
        datetime(2026, 11, 24, 23, 55, tzinfo=UTC),
    ]
    ends = [s + MIN5 for s in starts]
    kept = committed_around([award], starts, ends, T0, [_midnight_after(s) for s in starts])
    assert kept.tolist() == [0.0, 0.0]
    # ...while an interval of the 25th before it keeps the award's 100 kWh back.
    s = datetime(2026, 11, 25, 0, 15, tzinfo=UTC)
    kept = committed_around([award], [s], [s + MIN5], T0, [_midnight_after(s)])
    assert kept.tolist() == [pytest.approx(100.0)]


def test_offers_made_between_two_intervals_still_to_offer_count_for_both() -> None:
    # 13:15 was left unoffered; 13:20 to 14:10 were offered at 100 kW and not awarded yet.
    # The 14:15 interval offered now comes after them: their 91.7 kWh are gone by then; the
    # 13:15 one comes before them: they will take it after.
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    first = datetime(2026, 11, 25, 13, 15, tzinfo=UTC)
    offered = [(first + k * MIN5, first + (k + 1) * MIN5, 100.0) for k in range(1, 12)]
    starts = [first, first + 12 * MIN5]
    ends = [s + MIN5 for s in starts]
    kept = committed_around(offered, starts, ends, now, [_midnight_after(s) for s in starts])
    assert kept.tolist() == [pytest.approx(1100.0 / 12), pytest.approx(1100.0 / 12)]
