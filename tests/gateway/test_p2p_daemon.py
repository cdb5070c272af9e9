"""Peer-to-peer trading in the daemon (issue 18, item 4): every trade reaches its member's
ledgered award and its settlement, positions and preferences from provisioning reach the
clearing on the k-nearest graph, hostile provisioning values are refused, and a distance
preference shrinks trade between two villages."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.interval.clearing import Bid, Clearing
from gateway.config import MarketConfig
from gateway.ledger import records, verify
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
    assert len(json.loads(records.unpack(record))["trades"]) == HUB_PEERS
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


# --- positions and preferences from provisioning, in the daemon's clearing


def p2p_offline(tmp_path, **p2p: object) -> Offline:  # noqa: ANN001
    from gateway.interval.clearing import market_clear
    from tests.gateway.conftest import make_config

    cfg = make_config(tmp_path, None, interval_s=INTERVAL_S, gate_closure_s=10)
    cfg.settlement.grace_s = 5
    cfg.market.mechanism = "p2p"
    for key, value in p2p.items():
        setattr(cfg.market.p2p, key, value)
    return Offline(cfg, 1_700_000_000.0 // INTERVAL_S * INTERVAL_S, clear=market_clear)


def place(off: Offline, meters: dict[str, tuple[tuple[float, float] | None, int]]) -> dict[str, MeterSpec]:
    """Provision each meter at its position with its preference (micro-currency per kWh per km)."""
    from gateway.registry import Registry

    reg = Registry(conn=off.conn)
    out = {}
    for meter, (position, preference) in meters.items():
        dev = reg.provision(meter, off.cfg.community, position=position, preference=preference)
        out[meter] = MeterSpec(meter, dev.kid, dev.key)
    return out


def clear_once(off: Offline, specs: dict[str, MeterSpec], curves: dict[str, list[list[int]]]) -> int:
    iv = int(off.clock.t) // INTERVAL_S + 1
    off.tick(iv * INTERVAL_S - 30)
    off.send(*(bid(specs[m], off.cfg.community, iv, 0, c, int(off.clock.t)) for m, c in curves.items()))
    off.tick(iv * INTERVAL_S - 5)
    return iv


def trades_of(off: Offline, iv: int) -> dict[str, list[tuple[str, int, int]]]:
    rows = off.conn.execute("SELECT meter, trades FROM awards WHERE iv=?", (iv,)).fetchall()
    return {m: [tuple(t) for t in json.loads(tr)] for m, tr in rows}


SELL = [[0, 20_000], [1000, 20_000]]  # up to 1 kWh at 0.02 per kWh
BUY = [[-1000, 280_000], [0, 280_000]]  # up to 1 kWh, willing to pay 0.28


def test_positions_and_preferences_from_provisioning_reach_the_clearing(tmp_path) -> None:  # noqa: ANN001
    from gateway.interval.clearing import market_clear

    off = p2p_offline(tmp_path)
    seen: list[list[Bid]] = []

    def recording(iv: int, bids: list[Bid], market: MarketConfig) -> Clearing:
        seen.append(bids)
        return market_clear(iv, bids, market)

    off.scheduler.clear = recording
    specs = place(off, {"s": ((0.0, 0.0), 0), "b": ((0.3, 0.4), 50_000), "lone": (None, 0)})
    iv = clear_once(off, specs, {"s": SELL, "b": BUY, "lone": [[-1000, 350_000], [0, 350_000]]})
    got = {b.meter: (b.position, b.preference) for b in seen[0]}
    assert got == {"s": ((0.0, 0.0), 0), "b": ((0.3, 0.4), 50_000), "lone": (None, 0)}
    trades = trades_of(off, iv)
    # b buys from s, 0.5 km away: both at their bounds, the price lies between s's cost (c_s = 0)
    # and b's willingness to pay less its premium c_b gamma = 0.05 * 0.5 (lambda = mc_b - c_b gamma).
    assert [t[:2] for t in trades["b"]] == [("s", -1000)]
    assert 20_000 <= trades["b"][0][2] <= 280_000 - 25_000
    # A meter provisioned without a position has no peers: it buys from the grid, counted.
    assert [(peer, q) for peer, q, _ in trades["lone"]] == [("grid", -1000)]
    assert off.counters["p2p_unplaced"] == 1


def test_k_comes_from_the_config(tmp_path) -> None:  # noqa: ANN001
    # A row of meters 1 km apart, sellers and buyers alternating: with k = 1 each trades only
    # with the meters next to it.
    off = p2p_offline(tmp_path, k=1)
    row = {f"m{i}": ((float(i), 0.0), 0) for i in range(8)}
    specs = place(off, row)
    iv = clear_once(off, specs, {m: SELL if i % 2 == 0 else BUY for i, m in enumerate(row)})
    for meter, trades in trades_of(off, iv).items():
        peers = {int(p[1:]) for p, _, _ in trades if p != "grid"}
        assert peers <= {int(meter[1:]) - 1, int(meter[1:]) + 1}, (meter, trades)
    assert sum(q for t in trades_of(off, iv).values() for p, q, _ in t if p != "grid" and q > 0) == 4000


def villages(n: int, apart_km: float) -> dict[str, tuple[float, float]]:
    """Two villages of n households each, on 100 m grids, ``apart_km`` between their centres."""
    side = int(n ** 0.5 + 0.999)
    out = {}
    for v, x0 in (("a", 0.0), ("b", apart_km)):
        for i in range(n):
            out[f"{v}{i:02d}"] = (x0 + 0.1 * (i % side), 0.1 * (i // side))
    return out


def cross_village_wh(trades: dict[str, list[tuple[str, int, int]]]) -> int:
    return sum(q for m, ts in trades.items() for p, q, _ in ts if p != "grid" and q > 0 and p[0] != m[0])


def test_a_distance_preference_shrinks_trade_between_two_villages(tmp_path) -> None:  # noqa: ANN001
    # Village a has the sun, village b the demand, 3 km apart. Without a preference a's surplus
    # goes to b (0.02 beats b's 0.30 import price); with c_n = 0.05 per kWh per km on every member
    # a trade across costs 2 * 0.05 * 3 = 0.30 per kWh, more than the 0.25 the grid's spread saves.
    homes = villages(6, 3.0)
    curves = {m: (SELL if m[0] == "a" and int(m[1:]) < 5 else BUY) if m[0] == "a" else
              (BUY if int(m[1:]) < 5 else SELL) for m in homes}
    crossed = {}
    for pref in (0, 50_000):
        off = p2p_offline(tmp_path / str(pref), k=10)
        specs = place(off, {m: (xy, pref) for m, xy in homes.items()})
        crossed[pref] = cross_village_wh(trades_of(off, clear_once(off, specs, curves)))
    assert crossed[0] >= 3000  # a's net surplus (5 - 1 kWh) went across, less what b's one seller covers
    assert crossed[50_000] == 0


# --- provisioning: hostile values, old databases


@pytest.mark.parametrize("flag, value, says", [
    ("--position", "nan,0", "finite"), ("--position", "0,inf", "finite"), ("--position", "1e9,0", "within"),
    ("--position", "1", "x,y"), ("--position", "1,2,3", "x,y"), ("--position", "a,b", "x,y"),
    ("--preference", "-0.01", ">= 0"), ("--preference", "nan", "finite"), ("--preference", "inf", "finite"),
    ("--preference", "2", "at most 1"), ("--preference", "1e-9", "6 decimals"), ("--preference", "x", "currency"),
])
def test_hostile_position_or_preference_is_refused_in_one_line(tmp_path, flag: str, value: str, says: str) -> None:  # noqa: ANN001
    from tests.gateway.conftest import tmeter

    out = tmeter("provision", "m1", "--db", str(tmp_path / "g.db"), "--out", str(tmp_path / "m1.json"),
                 f"{flag}={value}")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and says in out.stderr, out.stderr
    assert not (tmp_path / "m1.json").exists()


def test_registry_refuses_hostile_places_and_a_rotation_keeps_the_place(tmp_path) -> None:  # noqa: ANN001
    from gateway.registry import Place, Registry, RegistryError

    reg = Registry(tmp_path / "g.db")
    for bad in ({"position": (float("nan"), 0.0)}, {"position": (0.0,)}, {"position": (True, 0.0)},
                {"preference": -1}, {"preference": 0.5}, {"preference": 10 ** 9}):
        with pytest.raises(RegistryError):
            reg.provision("m1", "c1", **bad)  # type: ignore[arg-type]
    assert reg.meters() == []  # nothing registered by a refused call
    dev = reg.provision("m1", "c1", position=(1.2, 0.4), preference=20_000)
    reg.provision("m1", "c1", rotate=True, password=dev.mqtt.password)
    assert reg.places() == {"m1": Place((1.2, 0.4), 20_000)}


def test_the_cli_stores_position_and_preference_and_says_so(tmp_path) -> None:  # noqa: ANN001
    from gateway.registry import Place, Registry
    from tests.gateway.conftest import tmeter

    out = tmeter("provision", "m1", "--db", str(tmp_path / "g.db"), "--out", str(tmp_path / "m1.json"),
                 "--position", "1.2,0.4", "--preference", "0.02")
    assert out.returncode == 0, out.stderr
    assert "position 1.2,0.4 km, preference 0.02 per kWh per km" in out.stdout
    assert Registry(tmp_path / "g.db").places() == {"m1": Place((1.2, 0.4), 20_000)}


def test_a_database_of_an_older_version_gains_the_place_columns(tmp_path) -> None:  # noqa: ANN001
    import sqlite3

    from gateway import db
    from gateway.registry import Place, Registry

    old = sqlite3.connect(tmp_path / "g.db")
    old.execute("CREATE TABLE meters (meter TEXT PRIMARY KEY, community TEXT NOT NULL, created INTEGER NOT NULL,"
                " mqtt_hash TEXT NOT NULL, feeder INTEGER NOT NULL DEFAULT 0)")
    old.execute("INSERT INTO meters VALUES ('m1', 'c1', 0, 'x', 0)")
    old.commit()
    old.close()
    assert Registry(conn=db.connect(tmp_path / "g.db")).places() == {"m1": Place(None, 0)}


# --- the daemon's p2p path end to end


def test_the_daemon_clears_settles_and_ledgers_p2p_on_the_sparse_graph(tmp_path) -> None:  # noqa: ANN001
    from tests.gateway.meters import reading

    off = p2p_offline(tmp_path, k=3)
    homes = villages(5, 2.0)
    specs = place(off, {m: (xy, 10_000) for m, xy in homes.items()})
    curves = {m: SELL if int(m[1:]) % 2 == 0 else [[-1000, 400_000], [0, 400_000]] for m in homes}
    iv = clear_once(off, specs, curves)
    awards = dict(off.conn.execute("SELECT meter, q_wh FROM awards WHERE iv=?", (iv,)).fetchall())
    assert set(awards) == set(homes) and sum(q for q in awards.values() if q > 0) > 0
    trades = trades_of(off, iv)
    for meter, ts in trades.items():  # each member's trades add up to its award
        assert sum(q for _, q, _ in ts) == awards[meter], meter
    off.tick((iv + 1) * INTERVAL_S)
    for m, q in awards.items():
        off.send(reading(specs[m], off.cfg.community, iv, INTERVAL_S, imp_wh=max(-q, 0), exp_wh=max(q, 0))[:2])
    off.tick((iv + 2) * INTERVAL_S)
    lines = {m: (a, d) for m, a, d in off.conn.execute(
        "SELECT meter, award_amount, deviation_amount FROM settlements WHERE iv=?", (iv,))}
    assert set(lines) == set(homes) and all(d == 0 for _, d in lines.values())
    for meter, ts in trades.items():
        assert lines[meter][0] == sum(money(q, p) for _, q, p in ts), meter
    # Between members the money is a transfer: what the sellers get from peers the buyers pay.
    peer = sum(money(q, p) for ts in trades.values() for m, q, p in ts if m != "grid")
    assert abs(peer) <= len(homes)  # rounding of each trade's side, at most a micro-unit each
    report = _report(off)
    assert report.ok, report.problems


def test_the_demo_places_households_in_one_or_two_villages() -> None:
    from sim_hardware.harness.provisioning import HOUSE_SPACING_KM, household_positions

    one = household_positions(9)
    assert len(set(one)) == 9 and max(max(x, y) for x, y in one) == pytest.approx(2 * HOUSE_SPACING_KM)
    two = household_positions(10, villages=2, village_km=3.0)
    a, b = two[:5], two[5:]
    assert min(abs(p[0] - q[0]) for p in a for q in b) >= 3.0 - 2 * HOUSE_SPACING_KM - 1e-9
    with pytest.raises(ValueError):
        household_positions(4, villages=3)


def test_provisioning_a_meter_without_position_for_p2p_says_it_trades_with_the_grid_only(tmp_path) -> None:  # noqa: ANN001
    from tests.gateway.conftest import tmeter

    toml = tmp_path / "gateway.toml"
    toml.write_text('community = "c1"\ndb = "g.db"\n[market]\nmechanism = "p2p"\n[market.p2p]\nk = 5\n')
    out = tmeter("provision", "m1", "--config", str(toml), "--out", str(tmp_path / "m1.json"))
    assert out.returncode == 0 and "no position: under p2p it trades with the grid only" in out.stderr
    placed = tmeter("provision", "m2", "--config", str(toml), "--out", str(tmp_path / "m2.json"), "--position", "0,1")
    assert placed.returncode == 0 and placed.stderr == ""


def test_the_daemon_warms_the_p2p_engine_up_before_its_first_clearing(tmp_path) -> None:  # noqa: ANN001
    # A fresh process, as the daemon starts: opening the database thread's scheduler loads the
    # engine (scipy, the k-d tree), so the first interval with bids does not pay for it inside
    # its gate budget (1.3 s at 100 meters, 155 simulated s at 120x, before this test).
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from gateway.daemon import Gateway\n"
        "from tests.gateway.conftest import make_config\n"
        f"cfg = make_config(Path({str(tmp_path)!r}), None)\n"
        "cfg.market.mechanism = 'p2p'\n"
        "gw = Gateway(cfg)\n"
        "assert 'gateway.market.p2p' not in sys.modules\n"
        "gw._open()\n"
        "print('gateway.market.p2p' in sys.modules, gw.clear.count)\n")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    # Warmed up through the engine itself, not through the daemon's timed clearing (whose
    # count is the metric of real clearings).
    assert out.stdout.split() == ["True", "0"]
