"""Settlement arithmetic, the scheduler's interval life cycle, late readings and the feeder check."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.interval import settlement
from gateway.interval.clearing import round_awards
from gateway.config import MarketConfig, SettlementConfig
from gateway.registry import Registry
from protocols import messages
from tests.gateway.conftest import INTERVAL_S, Offline, first_point_clearing, populate
from tests.gateway.meters import MeterSpec, bid, reading

MARKET = MarketConfig(import_price=300_000, export_price=50_000)


def test_money_is_integer_and_rounds_half_up() -> None:
    assert settlement.money(1000, 175_000) == 175_000
    assert settlement.money(1, 500) == 1  # 0.5 rounds up
    assert settlement.money(-1, 500) == 0


def test_member_line_awarded_energy_at_price_deviation_at_grid_prices() -> None:
    award = settlement.Award(40, 175_000)
    over = settlement.settle_member("a", award, 50, MARKET)
    assert (over.award_amount, over.deviation_amount, over.amount) == (7000, 500, 7500)
    under = settlement.settle_member("a", award, 30, MARKET)
    assert (under.deviation_amount, under.amount) == (-3000, 4000)
    missing = settlement.settle_member("a", award, None, MARKET)
    assert (missing.metered_wh, missing.amount) == (None, 7000)
    p2p = settlement.Award(40, 175_000, (("b", 30, 100_000),))
    assert p2p.amount() == 3000 + settlement.money(10, 175_000)


@given(st.dictionaries(st.text("abc", min_size=1, max_size=3), st.floats(-50, 50, allow_nan=False), max_size=20))
def test_rounded_awards_sum_to_the_rounded_total_deterministically(awards: dict[str, float]) -> None:
    rounded = round_awards(awards)
    assert sum(rounded.values()) == round(sum(q * 1000 for q in awards.values()))
    assert all(abs(rounded[m] - awards[m] * 1000) < 1 + 1e-6 for m in awards)
    assert rounded == round_awards(dict(reversed(list(awards.items()))))


def test_balance_within_tolerance() -> None:
    cfg = SettlementConfig(loss_tolerance=0.05, loss_tolerance_wh=10)
    assert settlement.balance(1030, 1030, 1000, cfg) == settlement.Balance(True, 30)
    assert settlement.balance(1200, 1200, 1000, cfg).balanced is False
    assert settlement.balance(None, 0, 1000, cfg).balanced is None
    # Some meter's record is missing or inexact: the difference is kept, no verdict yet.
    assert settlement.balance(1200, 1200, 1000, cfg, complete=False) == settlement.Balance(None, 200)
    # Members trading among themselves: large member flows, a small net at the feeder.
    assert settlement.balance(100, 100, 60, cfg, members_gross_wh=1000).balanced is True
    assert settlement.balance(100, 100, 60, cfg, members_gross_wh=0).balanced is False
    # Little flowing through many meters: whole-Wh counters leave < 1 Wh per record.
    assert settlement.balance(305, 305, 350, cfg, members_gross_wh=350, records=101).balanced is True
    assert settlement.balance(305, 305, 350, cfg, members_gross_wh=350, records=11).balanced is False


def _lines(off: Offline) -> dict[tuple[int, str, int], int]:
    return {(iv, m, rev): amount for iv, m, rev, amount in
            off.conn.execute("SELECT iv, meter, rev, amount FROM settlements")}


def assert_bills_add_up(off: Offline) -> None:
    """Every settled interval's lines, all revisions, add up to what the community pays at its
    connection point: the members' net metered energy at the grid's prices."""
    rows = off.conn.execute("SELECT iv, SUM(amount) FROM settlements GROUP BY iv").fetchall()
    assert rows
    for iv, total in rows:
        imp, exp = off.conn.execute("SELECT SUM(imp_wh), SUM(exp_wh) FROM readings WHERE iv=?", (iv,)).fetchone()
        net = imp - exp
        assert total == settlement.grid_amount(max(net, 0), max(-net, 0), off.cfg.market), iv


def _own(off: Offline) -> dict[tuple[int, str, int], int]:
    """Each line's own amount: its award and deviation, without its share of the grid bill."""
    return {(iv, m, rev): a + d for iv, m, rev, a, d in
            off.conn.execute("SELECT iv, meter, rev, award_amount, deviation_amount FROM settlements")}


def test_scheduler_clears_publishes_awards_and_settles(offline: Offline) -> None:
    populate(offline)
    lines = {(iv, m, rev): (award + deviation, share) for iv, m, rev, award, deviation, share in offline.conn.execute(
        "SELECT iv, meter, rev, award_amount, deviation_amount, share_amount FROM settlements")}
    ivs = sorted({k[0] for k in lines})
    assert len(ivs) == 3
    assert lines[(ivs[0], "m000", 0)][0] == 7500
    assert lines[(ivs[0], "m002", 0)][0] == 4000
    assert_bills_add_up(offline)
    states = dict(offline.conn.execute("SELECT iv, state FROM intervals"))
    assert all(states[iv] == "settled" for iv in ivs)


def test_awards_and_result_are_published_tagged(offline: Offline) -> None:
    specs = {s.meter: s for s in _provision(offline, 2)}
    iv = int(offline.clock.t) // INTERVAL_S + 1
    offline.tick(iv * INTERVAL_S - 30)
    offline.send(*(bid(s, "c1", iv, 0, [[25, 1000]], int(offline.clock.t)) for s in specs.values()))
    out = offline.tick(iv * INTERVAL_S - 5)
    kinds = {}
    for o in out:
        community, subject, msg, _ = messages.decode(o.topic, o.payload, lambda m, k: specs[m].key)
        kinds.setdefault(msg["type"], []).append(msg)
    assert {a["meter"]: a["q_wh"] for a in kinds["award"]} == {"m000": 25, "m001": 25}
    assert kinds["result"][0]["bids"] == 2 and kinds["result"][0]["iv"] == iv


def _provision(off: Offline, n: int) -> list[MeterSpec]:
    from tests.gateway.conftest import provision

    return provision(off.cfg, n)


def test_late_reading_is_settled_as_an_adjustment_once(offline: Offline) -> None:
    populate(offline)
    iv = offline.conn.execute("SELECT MIN(iv) FROM settlements").fetchone()[0]
    reg = Registry(conn=offline.conn)
    dev = reg.provision("m009", "c1")
    spec = MeterSpec("m009", dev.kid, dev.key)
    acks = offline.send(reading(spec, "c1", iv, INTERVAL_S, imp_wh=100, exp_wh=0)[:2])
    assert b'"res":"stored"' in acks[0].payload
    offline.tick()
    offline.tick()
    lines = _own(offline)
    assert lines[(iv, "m009", 0)] == -30_000  # no award: 100 Wh bought at the import price
    assert (iv, "m009", 1) not in lines
    assert_bills_add_up(offline)  # the other members' shares were revised with it
    # A second late reading of an already settled member adds revision 1 with the difference only.
    offline.send(reading(spec, "c1", iv, INTERVAL_S, imp_wh=10, exp_wh=0)[:2])
    offline.tick()
    offline.tick()
    lines = _own(offline)
    assert lines[(iv, "m009", 1)] == -3000
    assert (iv, "m009", 2) not in lines
    assert_bills_add_up(offline)


def test_an_interval_is_never_settled_twice(offline: Offline) -> None:
    populate(offline)
    before = _lines(offline)
    iv = min(k[0] for k in before)
    offline.scheduler.settle_interval(iv, offline.clock.t)
    offline.tick()
    offline.tick(offline.clock.t + 1)
    assert _lines(offline) == before
    assert offline.conn.execute("SELECT COUNT(*) FROM leaves WHERE kind='interval' AND iv=?", (iv,)).fetchone()[0] == 1


def test_restart_resumes_open_intervals(offline: Offline) -> None:
    specs = _provision(offline, 2)
    iv = int(offline.clock.t) // INTERVAL_S + 1
    offline.tick(iv * INTERVAL_S - 30)
    offline.send(*(bid(s, "c1", iv, 0, [[25, 1000]], int(offline.clock.t)) for s in specs))
    offline.tick(iv * INTERVAL_S - 5)  # cleared, not yet settled
    offline.send(*(reading(s, "c1", iv, INTERVAL_S)[:2] for s in specs))
    offline.conn.close()
    again = Offline(offline.cfg, offline.clock.t)  # a new process on the same database
    again.tick((iv + 1) * INTERVAL_S + offline.cfg.settlement.grace_s)
    assert {m for (i, m, _) in _lines(again) if i == iv} == {"m000", "m001"}
    assert again.conn.execute("SELECT state FROM intervals WHERE iv=?", (iv,)).fetchone()[0] == "settled"


def test_feeder_meter_must_balance_with_members(offline: Offline) -> None:
    specs = _provision(offline, 2)
    dev = Registry(conn=offline.conn).provision("feeder", "c1", feeder=True)
    feeder = MeterSpec("feeder", dev.kid, dev.key)
    iv = int(offline.clock.t) // INTERVAL_S + 1
    offline.tick(iv * INTERVAL_S - 30)  # the scheduler opens iv (a reading never opens an interval)
    offline.tick((iv + 1) * INTERVAL_S)
    offline.send(*(reading(s, "c1", iv, INTERVAL_S, imp_wh=500, exp_wh=0)[:2] for s in specs))
    offline.send(reading(feeder, "c1", iv, INTERVAL_S, imp_wh=1020, exp_wh=0)[:2])  # 2 % losses: fine
    offline.send(reading(feeder, "c1", iv + 1, INTERVAL_S, imp_wh=1500, exp_wh=0)[:2])
    offline.send(*(reading(s, "c1", iv + 1, INTERVAL_S, imp_wh=500, exp_wh=0)[:2] for s in specs))  # 500 Wh unexplained
    offline.tick((iv + 3) * INTERVAL_S)
    rows = dict((r[0], (r[1], r[2])) for r in offline.conn.execute("SELECT iv, balanced, feeder_diff_wh FROM intervals"))
    assert rows[iv] == (1, 20)
    assert rows[iv + 1] == (0, 500)
    assert offline.counters["unbalanced_interval"] == 1
    assert "feeder" not in {m for (_, m, _) in _lines(offline)}  # the feeder is not a member


def test_clearing_failure_awards_nothing_and_keeps_going(offline: Offline) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("engine bug")

    offline.scheduler.clear = broken  # type: ignore[assignment]
    specs = _provision(offline, 1)
    iv = int(offline.clock.t) // INTERVAL_S + 1
    offline.tick(iv * INTERVAL_S - 30)
    offline.send(bid(specs[0], "c1", iv, 0, [[25, 1000]], int(offline.clock.t)))
    offline.tick(iv * INTERVAL_S - 5)
    assert offline.counters["clearing_failed"] == 1
    assert offline.conn.execute("SELECT state FROM intervals WHERE iv=?", (iv,)).fetchone()[0] == "cleared"
    assert first_point_clearing(iv, [], MARKET).awards == {}


def test_a_clearing_after_its_interval_opened_is_counted_late(offline: Offline, caplog) -> None:  # noqa: ANN001
    specs = _provision(offline, 1)
    iv = int(offline.clock.t) // INTERVAL_S + 1
    offline.tick(iv * INTERVAL_S - 30)
    offline.send(bid(specs[0], "c1", iv, 0, [[25, 1000]], int(offline.clock.t)))
    offline.tick(iv * INTERVAL_S - 5)  # inside the gate budget: in time
    assert offline.counters["cleared"] >= 1 and offline.counters["cleared_late"] == 0
    offline.tick((iv + 1) * INTERVAL_S - 30)
    offline.send(bid(specs[0], "c1", iv + 1, 1, [[25, 1000]], int(offline.clock.t)))
    offline.tick((iv + 1) * INTERVAL_S + 12)  # a tick 12 s into the interval: its awards are late
    assert offline.counters["cleared_late"] == 1
    assert f"interval {iv + 1}: 1 bids cleared 12 s after it opened" in caplog.text


def test_scheduler_clears_with_the_market_engine(tmp_path) -> None:  # noqa: ANN001
    from gateway.interval.clearing import market_clear
    from tests.gateway.conftest import make_config

    cfg = make_config(tmp_path, None, interval_s=INTERVAL_S, gate_closure_s=10)
    off = Offline(cfg, 1_700_000_000.0 // INTERVAL_S * INTERVAL_S, clear=market_clear)
    specs = _provision(off, 3)
    iv = int(off.clock.t) // INTERVAL_S + 1
    off.tick(iv * INTERVAL_S - 30)
    curves = [[[-500, 100_000], [500, 200_000]], [[-300, 400_000]], [[200, 10_000]]]
    off.send(*(bid(s, "c1", iv, 0, c, int(off.clock.t)) for s, c in zip(specs, curves)))
    out = off.tick(iv * INTERVAL_S - 5)
    awards = dict(off.conn.execute("SELECT meter, q_wh FROM awards WHERE iv=?", (iv,)).fetchall())
    price = off.conn.execute("SELECT price FROM intervals WHERE iv=?", (iv,)).fetchone()[0]
    assert awards == {"m000": 100, "m001": -300, "m002": 200}  # supply meets demand inside the community
    assert cfg.market.export_price <= price <= cfg.market.import_price
    result = [o for o in out if o.topic.endswith("/result")][0]
    _, _, msg, _ = messages.decode(result.topic, result.payload)
    assert msg["bids"] == 3 and msg["grid_import_wh"] == 0 and msg["price"] == price


lines_strategy = st.lists(st.tuples(st.integers(-5000, 5000), st.integers(-5000, 5000) | st.none()),
                          min_size=1, max_size=12)


@given(lines_strategy, st.sampled_from(["none", "equal", "proportional"]), st.integers(0, 20_000), st.booleans())
def test_bills_add_up_to_the_grid_bill_under_every_rule(members: list[tuple[int, int | None]], rule: str,
                                                         grid_wh: int, importing: bool) -> None:
    market = MarketConfig(import_price=300_000, export_price=50_000, allocation=rule)
    lines = [settlement.settle_member(f"m{i}", settlement.Award(q, 120_000), metered, market)
             for i, (q, metered) in enumerate(members)]
    imp, exp = (grid_wh, 0) if importing else (0, grid_wh)
    billed = settlement.share_grid_bill(lines, imp, exp, market)
    # Independently: each side of the grid bill in exact fractions, rounded half up, then the
    # rule's quotas of what the members' own amounts leave over.
    from fractions import Fraction

    def half_up(x: Fraction) -> int:
        return (x + Fraction(1, 2)).__floor__()

    grid = half_up(Fraction(exp * 50_000, 1000)) - half_up(Fraction(imp * 300_000, 1000))
    assert sum(x.amount for x in billed) == grid
    left = sum(x.amount for x in billed) - sum(x.award_amount + x.deviation_amount for x in lines)
    weight = {"equal": lambda x: 1, "proportional": lambda x: abs(x.metered_wh or 0),
              "none": lambda x: abs((x.metered_wh or 0) - x.award_wh)}[rule]
    weights = [weight(x) for x in lines]
    total = sum(weights) or len(weights)
    for x, w in zip(billed, weights if any(weights) else [1] * len(weights)):
        assert abs(x.share_amount - Fraction(left * w, total)) < 1
    # Shares never touch what the member's own award and deviation cost.
    assert [(x.award_amount, x.deviation_amount) for x in billed] == [(x.award_amount, x.deviation_amount) for x in lines]


def test_with_a_feeder_the_bill_is_the_feeders_and_waits_for_every_member(offline: Offline) -> None:
    specs = _provision(offline, 2)
    dev = Registry(conn=offline.conn).provision("feeder", "c1", feeder=True)
    feeder = MeterSpec("feeder", dev.kid, dev.key)
    iv = int(offline.clock.t) // INTERVAL_S + 1
    offline.tick(iv * INTERVAL_S - 30)
    offline.tick((iv + 1) * INTERVAL_S)
    offline.send(reading(specs[0], "c1", iv, INTERVAL_S, imp_wh=500, exp_wh=0)[:2])
    offline.send(reading(feeder, "c1", iv, INTERVAL_S, imp_wh=1020, exp_wh=0)[:2])  # losses are the community's
    offline.tick((iv + 3) * INTERVAL_S)
    shares = dict(offline.conn.execute("SELECT meter, share_amount FROM settlements WHERE iv=?", (iv,)))
    assert shares == {"m000": 0}  # m001's reading is missing: nothing to share yet
    offline.send(reading(specs[1], "c1", iv, INTERVAL_S, imp_wh=500, exp_wh=0)[:2])
    offline.tick()
    offline.tick()
    total = offline.conn.execute("SELECT SUM(amount) FROM settlements WHERE iv=?", (iv,)).fetchone()[0]
    assert total == settlement.grid_amount(1020, 0, offline.cfg.market) == -306_000


@pytest.mark.parametrize("rule", ["equal", "proportional"])
def test_under_a_sharing_rule_each_bidder_pays_the_share_its_clearing_carried(tmp_path, rule: str) -> None:  # noqa: ANN001
    # Moret & Pinson's allocation inside the members' problems: a bidder's award is not priced,
    # it pays the share of the grid bill its own problem carried, and the shares are ledgered.
    from gateway.interval.clearing import market_clear
    from gateway.ledger import verify
    from tests.gateway.conftest import make_config

    cfg = make_config(tmp_path, None, interval_s=INTERVAL_S, gate_closure_s=10)
    cfg.market.allocation = rule
    off = Offline(cfg, 1_700_000_000.0 // INTERVAL_S * INTERVAL_S, clear=market_clear)
    specs = _provision(off, 4)
    iv = int(off.clock.t) // INTERVAL_S + 1
    off.tick(iv * INTERVAL_S - 30)
    curves = [[[-500, 100_000], [500, 200_000]], [[-300, 400_000]], [[-200, 250_000], [200, 350_000]]]
    off.send(*(bid(s, "c1", iv, 0, c, int(off.clock.t)) for s, c in zip(specs, curves)))  # m003 does not bid
    off.tick(iv * INTERVAL_S - 5)
    shares = dict(off.conn.execute("SELECT meter, share_ppm FROM awards WHERE iv=?", (iv,)).fetchall())
    assert set(shares) == {"m000", "m001", "m002"} and abs(sum(shares.values()) - 1_000_000) <= 3
    if rule == "equal":
        assert max(shares.values()) - min(shares.values()) <= 1
    off.send(*(reading(s, "c1", iv, INTERVAL_S, imp_wh=100 * (i + 1), exp_wh=20)[:2] for i, s in enumerate(specs)))
    off.tick((iv + 3) * INTERVAL_S)
    lines = {m: (a, d, sh) for m, a, d, sh in off.conn.execute(
        "SELECT meter, award_amount, deviation_amount, share_amount FROM settlements WHERE iv=?", (iv,))}
    assert all(lines[m][:2] == (0, 0) for m in shares)  # no price on the award, no deviation charge
    assert lines["m003"][:2] == (0, settlement.money(-400 + 20, 300_000)) and lines["m003"][2] == 0
    assert_bills_add_up(off)
    left = sum(sh for _, _, sh in lines.values())
    for m, share in shares.items():  # each bidder's part of the bill is its cleared share
        assert abs(lines[m][2] - left * share / sum(shares.values())) <= 1
    report = verify.verify(off.conn, off.cfg.origin, off.ledger.signing_key.public_key())  # type: ignore[union-attr]
    assert report.ok, report.problems
