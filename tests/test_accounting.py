from fractions import Fraction

from dist_sqz.comm.accounting import Ledger, sent_bytes, sent_fraction


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
        rec.comm_time_s = 0.5
    step = ledger.take_step()
    assert step.payload_bytes == 301
    assert step.sent_bytes == round(Fraction(4 * 301, 3))
    assert step.comm_time_s == 1.5
    assert step.collectives == 3
    assert ledger.take_step().payload_bytes == 0
