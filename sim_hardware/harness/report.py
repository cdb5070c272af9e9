"""An HTML report of a simulated run: prices, each household's net position, its bill in the
community and alone, the members' saving in money."""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timedelta, timezone
from pathlib import Path

from gateway.bills import MICRO, MemberBill
from sim_hardware.harness.dashboard import money
from sim_hardware.harness.observer import CommunityObserver


def _figure_png(fig: object) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # type: ignore[attr-defined]
    return buf.getvalue()


def plots(obs: CommunityObserver, interval_s: int, feeders: tuple[str, ...] = ("feeder",),
          by_interval: list[tuple[int, int, int]] | None = None) -> dict[str, bytes]:
    """PNG bytes per plot name; ``by_interval``: (interval, members' bill, bill alone) as settled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import matplotlib.dates as mdates

    rows = obs.cleared()
    times = [datetime.fromtimestamp(v.iv * interval_s, timezone.utc) for v in rows]
    out: dict[str, bytes] = {}

    def time_axis(ax: object, ylabel: str, title: str) -> None:
        ax.set(xlabel="time (UTC)", ylabel=ylabel, title=title)  # type: ignore[attr-defined]
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M", tz=timezone.utc))  # type: ignore[attr-defined]

    fig, ax = plt.subplots(figsize=(8, 3))
    ax.step(times, [v.price / MICRO if v.bids else float("nan") for v in rows], where="post")  # type: ignore[operator]
    time_axis(ax, "currency per kWh", "Community price (no bids: no price)")
    out["prices"] = _figure_png(fig)
    plt.close(fig)

    # Ten lines on one axis hide each other: one row per household, colour = net export.
    households = sorted({m for v in obs.intervals.values() for m in v.net_wh} - set(feeders))
    if rows and households:
        grid = [[v.net_wh.get(m, 0) / 1000 for v in rows] for m in households]
        limit = max(0.1, max(abs(x) for line in grid for x in line))
        fig, ax = plt.subplots(figsize=(8, 0.8 + 0.25 * len(households)))
        image = ax.imshow(grid, aspect="auto", cmap="RdBu", vmin=-limit, vmax=limit, interpolation="nearest",
                          extent=(mdates.date2num(times[0]), mdates.date2num(times[-1] + (times[1] - times[0]
                                  if len(times) > 1 else timedelta(seconds=interval_s))), len(households) - 0.5, -0.5))
        ax.set_yticks(range(len(households)), households, fontsize=6)  # type: ignore[attr-defined]
        ax.xaxis_date()  # type: ignore[attr-defined]
        time_axis(ax, "household", "Each household's metered net position (blue exports, red imports)")
        fig.colorbar(image, ax=ax, label="net export, kWh per interval")
        out["net_positions"] = _figure_png(fig)
        plt.close(fig)

    if by_interval:
        fig, ax = plt.subplots(figsize=(8, 3))
        days = [datetime.fromtimestamp(iv * interval_s, timezone.utc) for iv, _, _ in by_interval]
        cumulative, total = [], 0
        for _, community, alone in by_interval:
            total += alone - community
            cumulative.append(total / MICRO)
        ax.plot(days, cumulative)
        time_axis(ax, "currency", "Members' cumulative saving against each household alone (money)")
        out["savings"] = _figure_png(fig)
        plt.close(fig)
    return out


def _bills_table(bills: list[MemberBill]) -> list[str]:
    head = ("household", "in kWh", "out kWh", "bill in the community", "bill alone", "saving")
    rows = [(b.member, f"{b.energy_in_wh / 1000:.2f}", f"{b.energy_out_wh / 1000:.2f}", money(b.community),
             money(b.alone), money(b.saving)) for b in bills]
    rows.append(("all", f"{sum(b.energy_in_wh for b in bills) / 1000:.2f}",
                 f"{sum(b.energy_out_wh for b in bills) / 1000:.2f}", money(sum(b.community for b in bills)),
                 money(sum(b.alone for b in bills)), money(sum(b.saving for b in bills))))
    basis = html.escape(bills[0].basis) if bills else ""
    return ([f"<h2>Bills (+ the household pays; alone: {basis})</h2><table><tr>"]
            + [f"<th>{h}</th>" for h in head] + ["</tr>"]
            + ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
            + ["</table>"])


# How to read each plot: what a member asks first on seeing it.
CAPTIONS = {
    "prices": "At the import price the community imports at the margin, at the feed-in price it"
              " exports; between the two it balances within itself.",
    "net_positions": "What the meter of each household measured at its connection point, interval by interval.",
    "savings": "The members' running saving against each household alone with its own battery. A dip"
               " is energy bought for later: batteries buy the community's surplus at the feed-in"
               " price, and the saving comes when that energy replaces import in the evening.",
}


def write_report(obs: CommunityObserver, interval_s: int, out_dir: Path, notes: list[str],
                 bills: list[MemberBill] | None = None, by_interval: list[tuple[int, int, int]] | None = None) -> Path:
    """Write report.html (plots inline, also saved as PNG files) and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images = plots(obs, interval_s, by_interval=by_interval)
    welfare, welfare_alone = obs.totals()
    parts = [
        "<!doctype html><meta charset='utf-8'><title>tmeter demo report</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "td,th{padding:.2em .8em;text-align:right}</style>",
        f"<h1>Community {html.escape(obs.community)}</h1>",
        "<table><tr><th>cleared intervals</th><th>readings</th><th>ledger records</th>"
        "<th>welfare objective</th><th>welfare objective, each alone on its bid</th></tr>",
        f"<tr><td>{len(obs.cleared())}</td><td>{obs.readings}</td><td>{obs.ledger_size}</td>"
        f"<td>{money(welfare)}</td><td>{money(welfare_alone)}</td></tr></table>",
    ]
    if bills:
        parts += _bills_table(bills)
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    for name, png in images.items():
        (out_dir / f"{name}.png").write_bytes(png)
        data = base64.b64encode(png).decode()
        parts.append(f"<h2>{name.replace('_', ' ')}</h2><p>{html.escape(CAPTIONS[name])}</p>"
                     f"<img alt='{name}' src='data:image/png;base64,{data}'>")
    path = out_dir / "report.html"
    path.write_text("\n".join(parts))
    return path
