"""Interval accounting (firmware/accounting.py, run here under CPython): integer Wh, records
that chain, counters interpolated to the market boundary, flags instead of invented energy."""

from __future__ import annotations

from firmware.accounting import Accountant
from protocols import messages

INTERVAL_S = 900
MS = 1000


def counter_at(t_ms: int, watts: int) -> int:
    """A meter counter (Wh) growing at a constant power."""
    return watts * t_ms // (3600 * MS)


def run(reads: list[int], watts: int, closes: list[int]) -> list[dict[str, int]]:
    """Feed reads at the given times (ms) and close after the first read past each boundary."""
    acct = Accountant(INTERVAL_S)
    acct.iv = reads[0] // (INTERVAL_S * MS)
    records = []
    for t in reads:
        acct.observe(counter_at(t, watts), 0, t)
        while closes and t >= closes[0]:
            records.append(acct.close(t // (INTERVAL_S * MS), t))
            closes.pop(0)
    return records


def test_records_cover_exactly_their_interval_at_constant_power() -> None:
    iv0 = 1_978_000
    start = iv0 * INTERVAL_S * MS
    # Reads every 60 s, each 7 s after a whole minute: never exactly on the boundary.
    reads = [start + 7_000 + k * 60_000 for k in range(0, 61)]
    closes = [start + (n + 1) * INTERVAL_S * MS for n in range(3)]
    records = run(reads, 3600, closes)
    assert [r["iv"] for r in records] == [iv0, iv0 + 1, iv0 + 2]
    for r in records[1:]:
        assert r["t1"] - r["t0"] == INTERVAL_S and r["t0"] % INTERVAL_S == 0
        assert r["imp_wh"] == 900  # 3.6 kW for a quarter hour
        assert r["flags"] == 0
    # They chain: each record ends with the counters the next one starts from.
    for a, b in zip(records, records[1:]):
        assert b["cnt_imp_wh"] - a["cnt_imp_wh"] == b["imp_wh"]


def test_no_interpolation_over_a_long_gap_flags_instead() -> None:
    iv0 = 1_978_000
    start = iv0 * INTERVAL_S * MS
    acct = Accountant(INTERVAL_S)
    acct.iv = iv0
    acct.observe(100, 0, start + 10_000)
    acct.observe(150, 0, start + 300_000)
    acct.missed()  # the meter stopped answering before the boundary
    acct.observe(400, 0, start + INTERVAL_S * MS + 500_000)  # back long after it
    rec = acct.close(iv0 + 1, start + INTERVAL_S * MS + 500_000)
    assert rec["flags"] & messages.FLAG_METER_OFFLINE
    assert rec["t1"] * MS == start + INTERVAL_S * MS + 500_000  # a real read, not a guess
    assert rec["imp_wh"] == 300


def test_counter_decrease_is_flagged_and_adds_no_energy() -> None:
    acct = Accountant(INTERVAL_S)
    acct.iv = 10
    t = 10 * INTERVAL_S * MS
    acct.observe(5_000, 0, t + 1_000)
    acct.observe(5_100, 0, t + 60_000)
    acct.observe(20, 0, t + 120_000)  # meter replaced
    acct.observe(70, 0, t + INTERVAL_S * MS + 3_000)
    rec = acct.close(11, t + INTERVAL_S * MS + 3_000)
    assert rec["flags"] & messages.FLAG_COUNTER_RESET
    assert rec["imp_wh"] >= 100 and rec["imp_wh"] <= 150  # before and after the reset, never negative
