"""The red-team replay of issue #12: every attack on the gateway's trust anchor, tried as an
attacker would, against one gateway set up as the README says (Mosquitto with the generated
password and ACL files, `tmeter gateway run` as a child process, meters from `tmeter
provision`), in a temporary folder. Prints one table (attack, expected, outcome, the gateway
counters it moved, readings acked but not stored, settlement lines for forged or quarantined
data, verdict) and exits 1 if any attack was not held.

The attacks are sim_hardware/harness/redteam.py; tests/e2e/test_redteam.py asserts the same rows.
No time is measured: the peer is the guarantee in the README ("What the gateway guarantees").

    python3 bench/redteam.py [--only span,counter,...] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from sim_hardware.harness.redteam import ATTACKS, Row, replay  # noqa: E402


def table(rows: list[Row]) -> Table:
    t = Table(title="red-team replay (issue #12)", show_lines=True)
    for name, justify in (("attack", "left"), ("expected", "left"), ("outcome", "left"), ("counters", "left"),
                          ("lost", "right"), ("wrong settlements", "right"), ("verdict", "left")):
        t.add_column(name, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for r in rows:
        counters = ", ".join(f"{k} {v:+d}" for k, v in r.counters.items()) or "-"
        verdict = "[green]held[/]" if r.passed else "[red]NOT HELD[/]"
        t.add_row(r.attack, r.expected, r.outcome, counters, str(r.lost), str(r.wrong_settlements), verdict)
    return t


def held(r: Row) -> bool:
    return r.passed and r.lost == 0 and r.wrong_settlements == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default=",".join(ATTACKS), help=f"attacks to run, comma-separated: {', '.join(ATTACKS)}")
    ap.add_argument("--keep", type=Path, help="run in this folder and keep it (logs, database, broker files)")
    args = ap.parse_args()
    only = [a for a in args.only.split(",") if a]
    unknown = sorted(set(only) - ATTACKS.keys())
    if unknown:
        print(f"bench/redteam.py: unknown attack(s) {', '.join(unknown)}; choose from {', '.join(ATTACKS)}",
              file=sys.stderr)
        return 2
    started = time.monotonic()
    if args.keep:
        rows = replay(args.keep, only)
    else:
        with tempfile.TemporaryDirectory(prefix="tmeter-redteam-") as tmp:
            rows = replay(Path(tmp), only)
    console = Console(width=max(Console().width, 160))
    console.print(table(rows))
    failed = [r.attack for r in rows if not held(r)]
    console.print(f"{len(rows) - len(failed)} of {len(rows)} attacks held in {time.monotonic() - started:.0f} s"
                  + (f"; NOT held: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
