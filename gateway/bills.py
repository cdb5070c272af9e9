"""Members' bills: what each member paid in the community over a period, beside what it would
have paid alone, in integer micro-currency, from the settled ledger rows.

A bill is the sum of the member's settlement lines (every revision) over the settled intervals
of the period, sign turned to what a bill shows: positive, the member pays. The lines already add
up to the community's grid bill (gateway/interval/settlement.py), so the members' bills of a
period add up to what the community paid at its connection point.

"Alone" is a stated alternative, one of:

- ``Tariff``: the member's own metered energy at the grid's import and feed-in prices, interval
  by interval: the bill of the same flows without the community. Available for real meters.
- ``AloneFile``: per member and interval, what the simulator's household alone paid (the same
  household, its battery in self-consumption, sim_hardware/simulator/alone.py): the honest
  alternative of a simulated community, since alone the household's flows are not the same.

The saving is the bill alone minus the bill in the community; positive, the member gained.
"""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from protocols.money import amount


MICRO = 1_000_000  # micro-currency per currency unit


def currency(micro: int) -> str:
    """Micro-currency as a person reads it, to the cent, rounded half away from zero, from the
    integer itself (no float in between): 1234567 -> "1.23", -5000 -> "-0.01"."""
    cents = (abs(micro) + 5000) // 10_000
    return f"{'-' if micro < 0 and cents else ''}{cents // 100:,}.{cents % 100:02d}"


class BillError(ValueError):
    """A period, file or price no bill can be made of: one line."""


@dataclass(frozen=True)
class MemberBill:
    member: str
    first_iv: int
    last_iv: int
    intervals: int  # settled intervals of the period the member has a line in
    energy_in_wh: int  # metered import
    energy_out_wh: int  # metered export
    community: int  # micro-currency the member paid in the community (+ pays, - is paid)
    alone: int  # micro-currency it would have paid alone
    basis: str  # which alternative ``alone`` is

    @property
    def saving(self) -> int:
        return self.alone - self.community


class Alternative(Protocol):
    basis: str

    def bill(self, member: str, iv: int, imp_wh: int, exp_wh: int) -> int:
        """What ``member`` would have paid alone in interval ``iv`` (+ pays)."""


@dataclass(frozen=True)
class Tariff:
    import_price: int  # micro-currency per kWh
    export_price: int
    basis: str = "tariff"

    def __post_init__(self) -> None:
        if self.import_price < 0 or self.export_price < 0:
            raise BillError("grid prices must not be negative (micro-currency per kWh)")

    def bill(self, member: str, iv: int, imp_wh: int, exp_wh: int) -> int:  # noqa: ARG002
        return amount(imp_wh, self.import_price) - amount(exp_wh, self.export_price)


ALONE_COLUMNS = ("meter", "iv", "imp_wh", "exp_wh", "amount")


class AloneFile:
    """Per (member, interval) bills alone from a CSV with the columns ALONE_COLUMNS (amount in
    micro-currency, + the household was paid, as settlement lines and AloneInterval)."""

    basis = "household alone (simulated)"

    def __init__(self, rows: dict[tuple[str, int], int]) -> None:
        self.rows = rows

    @classmethod
    def read(cls, path: str | Path) -> AloneFile:
        rows: dict[tuple[str, int], int] = {}
        try:
            with open(path, newline="") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames is None or not set(ALONE_COLUMNS) <= set(reader.fieldnames):
                    raise BillError(f"{path}: expected the columns {', '.join(ALONE_COLUMNS)}")
                for n, row in enumerate(reader, start=2):
                    key, value = _alone_row(path, n, row)
                    if key in rows:
                        raise BillError(f"{path}:{n}: a second row for meter {key[0]} interval {key[1]}")
                    rows[key] = value
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise BillError(f"{path}: {exc}") from None
        return cls(rows)

    def span(self) -> tuple[int, int] | None:
        """The first and last interval the file covers (a period's default), None if empty."""
        ivs = [iv for _, iv in self.rows]
        return (min(ivs), max(ivs)) if ivs else None

    def bill(self, member: str, iv: int, imp_wh: int, exp_wh: int) -> int:  # noqa: ARG002
        try:
            return -self.rows[(member, iv)]
        except KeyError:
            raise BillError(f"the alone file has no interval {iv} of {member}") from None


def _alone_row(path: str | Path, n: int, row: dict[str, str]) -> tuple[tuple[str, int], int]:
    try:
        iv, value = int(row["iv"]), int(row["amount"])
    except (TypeError, ValueError):
        raise BillError(f"{path}:{n}: iv and amount must be integers") from None
    if not row["meter"] or iv < 0:
        raise BillError(f"{path}:{n}: a meter id and an interval >= 0 are needed")
    return (row["meter"], iv), value


def write_alone(path: Path, bills: dict[str, Iterable[object]]) -> None:
    """The simulator's households alone as an AloneFile (objects with iv, imp_wh, exp_wh, amount)."""
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(ALONE_COLUMNS)
        for meter, intervals in sorted(bills.items()):
            for x in intervals:
                out.writerow([meter, x.iv, x.imp_wh, x.exp_wh, x.amount])  # type: ignore[attr-defined]


def _period(first_iv: int | None, last_iv: int | None) -> tuple[int, int]:
    if first_iv is not None and last_iv is not None and first_iv > last_iv:
        raise BillError(f"the period is empty: --from {first_iv} is after --to {last_iv}")
    return first_iv if first_iv is not None else 0, last_iv if last_iv is not None else 2 ** 62


def settled_amounts(conn: sqlite3.Connection, first_iv: int | None = None,
                    last_iv: int | None = None) -> list[tuple[str, int, int]]:
    """(member, interval, amount paid to it over every revision) per settled interval in
    [first_iv, last_iv], by interval then member."""
    return conn.execute(
        "SELECT s.meter, s.iv, SUM(s.amount) FROM settlements s JOIN intervals i ON i.iv = s.iv"
        " WHERE i.state = 'settled' AND s.iv BETWEEN ? AND ? GROUP BY s.iv, s.meter ORDER BY s.iv, s.meter",
        _period(first_iv, last_iv)).fetchall()


def member_bills(conn: sqlite3.Connection, alone: Alternative, first_iv: int | None = None,
                 last_iv: int | None = None) -> list[MemberBill]:
    """One bill per member over the settled intervals in [first_iv, last_iv]."""
    lo, hi = _period(first_iv, last_iv)
    lines = settled_amounts(conn, lo, hi)
    metered = {(m, iv): (imp, exp) for m, iv, imp, exp in conn.execute(
        "SELECT meter, iv, SUM(imp_wh), SUM(exp_wh) FROM readings WHERE iv BETWEEN ? AND ? GROUP BY meter, iv",
        (lo, hi))}
    acc: dict[str, list[int]] = {}
    for member, iv, paid_to in lines:
        imp, exp = metered.get((member, iv), (0, 0))
        a = acc.setdefault(member, [iv, iv, 0, 0, 0, 0, 0])
        a[0], a[1] = min(a[0], iv), max(a[1], iv)
        a[2] += 1
        a[3] += imp
        a[4] += exp
        a[5] -= paid_to
        a[6] += alone.bill(member, iv, imp, exp)
    return [MemberBill(m, *a, basis=alone.basis) for m, a in sorted(acc.items())]  # type: ignore[misc]


BILL_COLUMNS = ("member", "first_iv", "last_iv", "intervals", "energy_in_wh", "energy_out_wh",
                "bill_community_micro", "bill_alone_micro", "saving_micro", "alone_basis")


def write_bills(path: Path, bills: list[MemberBill]) -> None:
    """One row per member: energy in Wh, money in integer micro-currency (+ the member pays)."""
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(BILL_COLUMNS)
        for b in bills:
            out.writerow([b.member, b.first_iv, b.last_iv, b.intervals, b.energy_in_wh, b.energy_out_wh,
                          b.community, b.alone, b.saving, b.basis])
