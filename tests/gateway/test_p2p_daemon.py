"""Peer-to-peer trading in the daemon (issue 18, item 4): every trade reaches its member's
ledgered award and its settlement, positions and preferences from provisioning reach the
clearing on the k-nearest graph, hostile provisioning values are refused, and a distance
preference shrinks trade between two villages."""

from __future__ import annotations

import json
import logging

import pytest

from gateway.interval.clearing import Bid, Clearing
from gateway.config import MarketConfig
from gateway.ledger import verify
from protocols import messages
from protocols.money import amount as money
from tests.gateway.conftest import INTERVAL_S, Offline, provision
from tests.gateway.meters import MeterSpec, bid

HUB_PEERS = 70  # more than protocols.meterlink.MAX_TRADES = 64


def hub_clearing(iv: int, bids: list[Bid], market: MarketConfig) -> Clearing:
    """m000 sells to each of the others, a different quantity at a different price each."""
    peers = [b.meter for b in bids if b.meter != "m000"]
    trades: dict[str, list[tuple[str, int, int]]] = {"m000": []}
    awards = {"m000": 0}
    for k, peer in enumerate(peers, 1):
        q, price = 10 + k, 100_000 + 1_000 * k
        trades["m000"].append((peer, q, price))
        trades[peer] = [("m000", -q, price)]
        awards["m000"] += q
        awards[peer] = -q
    return Clearing("p2p", 0, awards, trades)


def _clear_hub(off: Offline) -> tuple[int, list[MeterSpec], list]:
    specs = provision(off.cfg, HUB_PEERS + 1)
    iv = int(off.clock.t) // INTERVAL_S + 1
    off.tick(iv * INTERVAL_S - 30)
    off.send(*(bid(s, "c1", iv, 0, [[25, 1000]], int(off.clock.t)) for s in specs))
    out = off.tick(iv * INTERVAL_S - 5)
    return iv, specs, out


def _report(off: Offline) -> verify.Report:
    return verify.verify(off.conn, off.cfg.origin, off.ledger.signing_key.public_key())  # type: ignore[union-attr]


def test_a_member_with_more_than_64_trades_has_every_trade_ledgered_and_settled(
        offline: Offline, caplog: pytest.LogCaptureFixture) -> None:
    offline.scheduler.clear = hub_clearing
    with caplog.at_level(logging.WARNING, "tmeter.gateway.scheduler"):
        iv, specs, out = _clear_hub(offline)
    expected = hub_clearing(iv, [Bid(s.meter, []) for s in specs], offline.cfg.market).trades["m000"]
    # The awards row and the ledgered award record hold all 70 trades.
    row = offline.conn.execute("SELECT trades, leaf FROM awards WHERE iv=? AND meter='m000'", (iv,)).fetchone()
    assert [tuple(t) for t in json.loads(row[0])] == expected
    record = offline.conn.execute("SELECT record FROM openings WHERE idx=?", (row[1],)).fetchone()[0]
    assert len(json.loads(record)["trades"]) == HUB_PEERS
    # The message to the meter carries the net award and the 64 largest trades; the cut is counted and logged.
    keys = {s.meter: s.key for s in specs}
    awards = [messages.decode(o.topic, o.payload, lambda m, k: keys[m])[2] for o in out if o.topic.endswith("/award")]
    hub = next(a for a in awards if a["meter"] == "m000")
    assert hub["q_wh"] == sum(q for _, q, _ in expected)
    assert len(hub["trades"]) == messages.MAX_TRADES
    assert min(abs(t[1]) for t in hub["trades"]) > max(abs(t[1]) for t in sorted(expected, key=lambda t: t[1])[:6])
    assert offline.counters["award_trades_cut"] == HUB_PEERS - messages.MAX_TRADES
    assert "6 trades left out" in caplog.text and "m000: 64 of 70" in caplog.text
    # Settlement prices every trade, the 65th to 70th too.
    offline.tick((iv + 2) * INTERVAL_S)
    amount = offline.conn.execute("SELECT award_amount FROM settlements WHERE iv=? AND meter='m000'", (iv,)).fetchone()[0]
    assert amount == sum(money(q, p) for _, q, p in expected)
    # The verifier passes, and catches an edit to a trade the message did not carry.
    assert _report(offline).ok, _report(offline).problems
    edited = [list(t) for t in expected]
    edited[-1][2] += 1
    offline.conn.execute("UPDATE awards SET trades=? WHERE iv=? AND meter='m000'", (json.dumps(edited), iv))
    report = _report(offline)
    assert not report.ok and any("award" in p and "m000" in p for p in report.problems), report.problems
