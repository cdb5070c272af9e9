"""The live table a person watches while a simulated community runs."""

from __future__ import annotations

from rich.table import Table

from gateway.bills import MICRO, currency as money  # noqa: F401 - the report and bench format with these
from sim_hardware.harness.observer import CommunityObserver


def price(micro_per_kwh: int | None) -> str:
    return "-" if micro_per_kwh is None else f"{micro_per_kwh / MICRO:.4f}"


def live_table(obs: CommunityObserver, interval_s: int, rows: int = 12) -> Table:
    community, bau = obs.totals()
    online = sum(obs.online.values())
    table = Table(
        title=f"community {obs.community}: {online}/{len(obs.online)} meters online, "
              f"ledger {obs.ledger_size} records, {obs.readings} readings",
        caption=f"so far: community {money(community)} vs BAU {money(bau)} "
                f"(saved {money(bau - community)})",
    )
    for name in ("interval", "time (UTC)", "price /kWh", "traded kWh", "grid in kWh",
                 "grid out kWh", "community cost", "BAU cost", "bids"):
        table.add_column(name, justify="right")
    for view in obs.cleared()[-rows:]:
        t = view.iv * interval_s
        table.add_row(
            str(view.iv), f"{t // 3600 % 24:02d}:{t // 60 % 60:02d}", price(view.price),
            f"{view.traded_wh / 1000:.2f}", f"{view.grid_import_wh / 1000:.2f}",
            f"{view.grid_export_wh / 1000:.2f}", money(view.community_cost), money(view.bau_cost),
            str(view.bids),
        )
    return table
