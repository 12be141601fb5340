from fractions import Fraction

import pytest

from dist_sqz.comm.accounting import CollectiveRecord, Ledger, busy_time, sent_bytes, sent_fraction


def test_sent_bytes_conventions():
    assert sent_bytes("allreduce", 4_941_984, 3) == 6_589_312
    assert sent_bytes("allreduce", 1000, 4) == 1500
    assert sent_bytes("allreduce", 1000, 1) == 0
    assert sent_bytes("allgather", 1000, 4) == 3000
    assert sent_bytes("broadcast", 1000, 8) == 1000
    assert sent_fraction("allreduce", 244_403_360, 3) == Fraction(4 * 244_403_360, 3)


def test_ledger_sums_exactly_and_clears():
    ledger = Ledger(world_size=3)
    for payload in (100, 200, 1):  # 2/3 x 301 is not an integer per bucket
        rec = ledger.begin("allreduce", payload)
        rec.end_s = rec.start_s + 0.5
    step = ledger.take_step()
    assert step.payload_bytes == 301
    assert step.sent_bytes == round(Fraction(4 * 301, 3))
    assert step.comm_time_s == pytest.approx(1.5)
    assert step.collectives == 3
    assert ledger.take_step().payload_bytes == 0


def _rec(start: float, end: float | None) -> CollectiveRecord:
    return CollectiveRecord("allreduce", 4, start_s=start, end_s=end)


def test_busy_time_is_the_union_of_in_flight_intervals():
    # [0, 2] and [1, 3] overlap into [0, 3]; [5, 6] stands apart; [5.5, 5.7] lies inside it.
    recs = [_rec(5, 6), _rec(0, 2), _rec(1, 3), _rec(5.5, 5.7)]
    assert busy_time(recs) == pytest.approx(4.0)
    assert sum(r.comm_time_s for r in recs) == pytest.approx(2 + 2 + 1 + 0.2)
    assert busy_time([]) == 0.0
    assert busy_time([_rec(1, None)]) == 0.0  # still in flight: no time yet
