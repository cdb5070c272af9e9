"""``tmeter clear``: clear one market interval from a JSON bid file (format: `bidfile`).

Exit codes: 0 cleared; 2 unreadable file, invalid bids or parameters, or an infeasible market
(a one-line message on stderr naming the bid and the reason, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mechanism", choices=["uniform", "p2p"], default="uniform",
                        help="uniform-price collective (default) or peer-to-peer trades")
    parser.add_argument("--bids", required=True, metavar="FILE.json",
                        help="bid file: community, bids, optional p2p section ('-' = stdin)")
    parser.add_argument("--solver", choices=["exact", "distributed"], default="exact",
                        help="exact engine (default) or the distributed ADMM / consensus solver")
    parser.add_argument("--json", action="store_true", help="machine-readable result on stdout")


def run(args: argparse.Namespace) -> int:
    from gateway.market import MarketInputError, clear, parse_bid_file

    try:
        bid_file = parse_bid_file(_load(args.bids))
        result = clear(bid_file.book, bid_file.community, args.mechanism, bid_file.p2p, args.solver)
    except (OSError, ValueError) as exc:  # unreadable file, bad JSON, MarketInputError
        kind = "invalid bid file" if isinstance(exc, MarketInputError) else "cannot read bids"
        print(f"tmeter clear: {kind}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        json.dump(result.to_json(), sys.stdout, indent=2, allow_nan=False)
        print()
    else:
        _print_tables(result)
    return 0


def _load(path: str) -> Any:
    if path == "-":
        return json.load(sys.stdin)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _print_tables(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    summary = Table(title=f"Clearing ({result.mechanism})", show_header=False)
    for label, value in _summary_rows(result):
        summary.add_row(label, value)
    console.print(summary)
    members = Table(title="Members")
    for col in ("meter", "award kWh", "cost", "payment", "BAU kWh", "BAU cost"):
        members.add_column(col, justify="left" if col == "meter" else "right")
    bau_q = result.bau_q if result.bau_q is not None else [None] * len(result.meters)
    bau_c = result.bau_member_cost if result.bau_member_cost is not None else [None] * len(result.meters)
    for i, meter in enumerate(result.meters):
        members.add_row(meter, _num(result.q[i]), _num(result.member_cost[i]),
                        _num(result.member_payment[i]), _num(bau_q[i]), _num(bau_c[i]))
    console.print(members)
    if result.trades:
        trades = Table(title="Trades")
        for col in ("from", "to", "kWh", "price"):
            trades.add_column(col, justify="left" if col in ("from", "to") else "right")
        for t in result.trades:
            trades.add_row(t.seller, t.buyer, _num(t.quantity), _num(t.price))
        console.print(trades)


def _summary_rows(result: Any) -> list[tuple[str, str]]:
    rows = [("price", _num(result.price)) if result.mechanism == "uniform" else ("trades", str(len(result.trades)))]
    rows += [
        ("grid import kWh", _num(result.grid_import)),
        ("grid export kWh", _num(result.grid_export)),
        ("objective", _num(result.objective)),
        ("community cost", _num(result.community_cost)),
        ("BAU cost", _num(result.bau_cost)),
        ("savings", _num(result.savings)),
        ("allocation", result.allocation),
    ]
    if result.congestion_import or result.congestion_export:
        rows.append(("congestion (import, export)",
                     f"{_num(result.congestion_import)}, {_num(result.congestion_export)}"))
    if result.convergence is not None:
        rows.append(("iterations", str(result.convergence.iterations)))
    return rows


def _num(value: float | None) -> str:
    return "-" if value is None else f"{float(value):.6g}"
