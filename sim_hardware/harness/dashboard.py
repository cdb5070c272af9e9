"""The live table a person watches while a simulated community runs."""

from __future__ import annotations

from rich.table import Table

from gateway.bills import MICRO, MemberBill, currency as money
from sim_hardware.harness.observer import CommunityObserver


def price(micro_per_kwh: int | None) -> str:
    return "-" if micro_per_kwh is None else f"{micro_per_kwh / MICRO:.4f}"


# Short enough that the table fits 80 columns with every header whole (time is UTC, money and
# prices in currency, energy in kWh; "welfare" is the market's objective, not money).
COLUMNS = ("UTC", "price", "traded kWh", "grid in", "grid out", "welfare", "w. alone", "bids")


def money_caption(bills: list[MemberBill]) -> str:
    """The members' money so far, in the community and alone (gateway/bills.py)."""
    community, alone = sum(b.community for b in bills), sum(b.alone for b in bills)
    better = sum(b.saving > 0 for b in bills)
    return (f"settled so far: members paid {money(community)} in the community, {money(alone)} alone "
            f"(saved {money(alone - community)}; {better} of {len(bills)} households better off)")


def live_table(obs: CommunityObserver, interval_s: int, bills: list[MemberBill] | None = None,
               rows: int = 12) -> Table:
    welfare, welfare_alone = obs.totals()
    online = sum(obs.online.values())
    caption = [f"welfare objective so far: community {money(welfare)} vs each alone on its bid {money(welfare_alone)}"]
    if bills:
        caption.insert(0, money_caption(bills))
    table = Table(
        title=f"community {obs.community}: {online}/{len(obs.online)} meters online, "
              f"ledger {obs.ledger_size} records, {obs.readings} readings",
        caption="\n".join(caption),
    )
    for name in COLUMNS:
        table.add_column(name, justify="right", no_wrap=True)
    for view in obs.cleared()[-rows:]:
        t = view.iv * interval_s
        table.add_row(
            f"{t // 3600 % 24:02d}:{t // 60 % 60:02d}", price(view.price) if view.bids else "-",
            f"{view.traded_wh / 1000:.2f}", f"{view.grid_import_wh / 1000:.2f}",
            f"{view.grid_export_wh / 1000:.2f}", money(view.community_cost), money(view.bau_cost),
            str(view.bids),
        )
    return table
