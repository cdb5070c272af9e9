"""Members' bills (gateway/bills.py, `tmeter bills`): they add up to the community's grid bill,
each agrees with an independent recomputation from the ledger rows, and every bad period, price
or alone file gets one line and exit code 2."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway import bills
from gateway.interval import settlement
from tests.gateway.conftest import Offline, populate, tmeter

TARIFF = ("--import-price", "300000", "--export-price", "50000")


def grid_bill(off: Offline) -> int:
    """What the community paid at its connection point over every settled interval (no feeder:
    the members' summed net), + pays."""
    total = 0
    for iv, imp, exp in off.conn.execute("SELECT r.iv, SUM(imp_wh), SUM(exp_wh) FROM readings r JOIN intervals i"
                                         " ON i.iv = r.iv WHERE i.state='settled' GROUP BY r.iv"):
        net = imp - exp
        total -= settlement.grid_amount(max(net, 0), max(-net, 0), off.cfg.market)
    return total


def test_bills_add_up_to_the_grid_bill_and_each_is_its_lines(offline: Offline) -> None:
    populate(offline, meters=4, intervals=4)
    tariff = bills.Tariff(300_000, 50_000)
    got = bills.member_bills(offline.conn, tariff)
    assert [b.member for b in got] == ["m000", "m001", "m002", "m003"]
    assert sum(b.community for b in got) == grid_bill(offline) != 0
    for b in got:
        paid_to, = offline.conn.execute("SELECT SUM(amount) FROM settlements WHERE meter=?", (b.member,)).fetchone()
        imp, exp = offline.conn.execute("SELECT SUM(imp_wh), SUM(exp_wh) FROM readings WHERE meter=?",
                                        (b.member,)).fetchone()
        assert (b.community, b.energy_in_wh, b.energy_out_wh, b.intervals) == (-paid_to, imp, exp, 4)
        alone = sum(i * 300 - e * 50 for i, e in offline.conn.execute(  # Wh x (micro/kWh) / 1000, exact
            "SELECT SUM(imp_wh), SUM(exp_wh) FROM readings WHERE meter=? GROUP BY iv", (b.member,)))
        assert b.alone == alone and b.saving == b.alone - b.community


def test_a_period_bills_only_its_settled_intervals(offline: Offline) -> None:
    populate(offline, meters=2, intervals=4)
    ivs = [iv for (iv,) in offline.conn.execute("SELECT DISTINCT iv FROM settlements ORDER BY iv")]
    part = bills.member_bills(offline.conn, bills.Tariff(300_000, 50_000), ivs[1], ivs[2])
    assert {(b.first_iv, b.last_iv, b.intervals) for b in part} == {(ivs[1], ivs[2], 2)}
    whole = bills.member_bills(offline.conn, bills.Tariff(300_000, 50_000))
    rest = bills.member_bills(offline.conn, bills.Tariff(300_000, 50_000), ivs[3])
    first = bills.member_bills(offline.conn, bills.Tariff(300_000, 50_000), None, ivs[0])
    assert [a.community + b.community + c.community for a, b, c in zip(first, part, rest)] == \
        [w.community for w in whole]
    with pytest.raises(bills.BillError, match="empty"):
        bills.member_bills(offline.conn, bills.Tariff(300_000, 50_000), ivs[2], ivs[1])


@dataclass
class _Alone:
    iv: int
    imp_wh: int
    exp_wh: int
    amount: int


def test_the_alone_file_is_the_alternative_and_round_trips(offline: Offline, tmp_path: Path) -> None:
    populate(offline, meters=2, intervals=2)
    ivs = [iv for (iv,) in offline.conn.execute("SELECT DISTINCT iv FROM settlements ORDER BY iv")]
    path = tmp_path / "alone.csv"
    bills.write_alone(path, {m: [_Alone(iv, 0, 0, -1000 * k - i) for i, iv in enumerate(ivs)]
                             for k, m in enumerate(["m000", "m001"])})
    got = bills.member_bills(offline.conn, bills.AloneFile.read(path))
    assert [b.alone for b in got] == [1, 2001] and got[0].basis.startswith("household alone")


@pytest.mark.parametrize(("content", "needle"), [
    ("meter,iv\nm000,1\n", "expected the columns"),
    ("meter,iv,imp_wh,exp_wh,amount\nm000,x,0,0,5\n", ":2: iv and amount must be integers"),
    ("meter,iv,imp_wh,exp_wh,amount\nm000,-1,0,0,5\n", "interval >= 0"),
    ("meter,iv,imp_wh,exp_wh,amount\nm000,1,0,0,5\nm000,1,0,0,6\n", ":3: a second row"),
    ("meter,iv,imp_wh,exp_wh,amount\nm000,1,0,0,5\n", "has no interval"),
    ("", "expected the columns"),
])
def test_a_bad_alone_file_is_one_line_and_exit_2(offline: Offline, tmp_path: Path, content: str, needle: str) -> None:
    populate(offline, meters=1, intervals=1)
    alone = tmp_path / "alone.csv"
    alone.write_text(content)
    # The whole log, not the file's own span (its default): the file then lacks settled intervals.
    out = tmeter("bills", "--db", offline.cfg.db, "--alone", str(alone), "--from", "0", "--to", str(10 ** 12))
    assert out.returncode == 2 and needle in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr


def test_the_command_writes_one_row_per_member(offline: Offline, tmp_path: Path) -> None:
    populate(offline, meters=3, intervals=2)
    out = tmeter("bills", "--db", offline.cfg.db, *TARIFF, "--csv", str(tmp_path / "bills.csv"))
    assert out.returncode == 0, out.stderr
    assert "in the community" in out.stdout and "saving" in out.stdout
    with (tmp_path / "bills.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["member"] for r in rows] == ["m000", "m001", "m002"]
    assert sum(int(r["bill_community_micro"]) for r in rows) == grid_bill(offline)
    assert all(int(r["saving_micro"]) == int(r["bill_alone_micro"]) - int(r["bill_community_micro"]) for r in rows)


@pytest.mark.parametrize(("args", "needle"), [
    ((), "say what alone means"),
    (("--import-price", "300000"), "say what alone means"),
    (("--import-price", "-1", "--export-price", "0"), "must not be negative"),
    (("--from", "9", "--to", "3", *TARIFF), "the period is empty"),
])
def test_bad_arguments_are_one_line_and_exit_2(offline: Offline, args: tuple[str, ...], needle: str) -> None:
    populate(offline, meters=1, intervals=1)
    out = tmeter("bills", "--db", offline.cfg.db, *args)
    assert out.returncode == 2 and needle in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr


def test_a_missing_database_is_not_created(tmp_path: Path) -> None:
    out = tmeter("bills", "--db", str(tmp_path / "none.db"), *TARIFF)
    assert out.returncode == 2 and "no database" in out.stderr
    assert not (tmp_path / "none.db").exists()


@pytest.mark.parametrize(("micro", "text"), [(0, "0.00"), (1_234_567, "1.23"), (-5000, "-0.01"), (-4999, "0.00"),
                                              (1_234_567_890_123, "1,234,567.89"), (995_000, "1.00")])
def test_currency_is_read_from_the_integer(micro: int, text: str) -> None:
    assert bills.currency(micro) == text
