"""`tmeter bills`: each member's bill over a period, in the community and alone, from the
gateway's settled ledger rows (gateway/bills.py). Read-only: a running gateway is not disturbed."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tmeter.commands.dbfile import UsageError, one_line, open_database


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--db", help="gateway database")
    src.add_argument("--config", help="gateway.toml: its database, and its grid prices for the tariff alternative")
    parser.add_argument("--from", dest="first_iv", type=int, metavar="IV",
                        help="first interval (default: the alone file's first, else the first settled)")
    parser.add_argument("--to", dest="last_iv", type=int, metavar="IV",
                        help="last interval (default: the alone file's last, else the last settled)")
    parser.add_argument("--alone", type=Path, metavar="CSV",
                        help="bills alone per member and interval (meter,iv,imp_wh,exp_wh,amount), e.g. the "
                             "demo's alone.csv; default: the member's metered energy at the grid prices")
    parser.add_argument("--import-price", type=int, metavar="MICRO", help="grid import price, micro-currency per kWh")
    parser.add_argument("--export-price", type=int, metavar="MICRO", help="feed-in price, micro-currency per kWh")
    parser.add_argument("--csv", type=Path, metavar="FILE", help="write one row per member to FILE")


def run(args: argparse.Namespace) -> int:
    import sqlite3  # noqa: PLC0415

    from gateway.bills import AloneFile, BillError, member_bills, write_bills  # noqa: PLC0415

    try:
        db, alone = _sources(args)
        first, last = args.first_iv, args.last_iv
        span = alone.span() if isinstance(alone, AloneFile) else None
        if span is not None:  # the period the alone file covers, unless told otherwise
            first = span[0] if first is None else first
            last = span[1] if last is None else last
        conn = open_database(db)
        try:
            bills = member_bills(conn, alone, first, last)
        finally:
            conn.close()
        if args.csv:
            write_bills(args.csv, bills)
    except (UsageError, BillError, sqlite3.DatabaseError, OSError) as exc:
        print(f"tmeter bills: {one_line(exc)}", file=sys.stderr)
        return 2
    print_bills(bills)
    return 0


def _sources(args: argparse.Namespace):  # noqa: ANN202 - (database path, gateway.bills.Alternative)
    from gateway.bills import AloneFile, Tariff  # noqa: PLC0415

    prices = (args.import_price, args.export_price)
    db = args.db
    if args.config:
        from gateway import config  # noqa: PLC0415

        cfg = config.load(args.config)  # a bad config: the CLI's one line per mistake
        db = cfg.db
        if prices == (None, None):
            prices = (cfg.market.import_price, cfg.market.export_price)
    if args.alone:
        if prices != (None, None) and not args.config:
            raise UsageError("--alone gives the alternative: drop --import-price/--export-price")
        return db, AloneFile.read(args.alone)
    if None in prices:
        raise UsageError("say what alone means: --alone CSV, or the grid prices (--config, or both"
                         " --import-price and --export-price)")
    return db, Tariff(*prices)  # type: ignore[arg-type]


def print_bills(bills: list) -> None:  # noqa: ANN001 - list[gateway.bills.MemberBill]
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from gateway.bills import currency as money  # noqa: PLC0415

    if not bills:
        print("no settled intervals in that period")
        return
    table = Table(title=f"Bills (+ the member pays), alone = {bills[0].basis}")
    for name in ("member", "intervals", "in kWh", "out kWh", "in the community", "alone", "saving"):
        table.add_column(name, justify="left" if name == "member" else "right")
    for b in bills:
        table.add_row(b.member, str(b.intervals), f"{b.energy_in_wh / 1000:.2f}", f"{b.energy_out_wh / 1000:.2f}",
                      money(b.community), money(b.alone), money(b.saving))
    table.add_row("all", "", f"{sum(b.energy_in_wh for b in bills) / 1000:.2f}",
                  f"{sum(b.energy_out_wh for b in bills) / 1000:.2f}", money(sum(b.community for b in bills)),
                  money(sum(b.alone for b in bills)), money(sum(b.saving for b in bills)), style="bold")
    Console().print(table)
