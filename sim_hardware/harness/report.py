"""An HTML report of a simulated run: prices, each household's net position, savings."""

from __future__ import annotations

import base64
import html
import io
from datetime import datetime, timezone
from pathlib import Path

from sim_hardware.harness.dashboard import MICRO, money
from sim_hardware.harness.observer import CommunityObserver


def _figure_png(fig: object) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # type: ignore[attr-defined]
    return buf.getvalue()


def plots(obs: CommunityObserver, interval_s: int, feeders: tuple[str, ...] = ("feeder",)) -> dict[str, bytes]:
    """PNG bytes per plot name."""
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
    ax.step(times, [v.price / MICRO for v in rows], where="post")  # type: ignore[operator]
    time_axis(ax, "clearing price per kWh", "Community price")
    out["prices"] = _figure_png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 4))
    households = sorted({m for v in obs.intervals.values() for m in v.net_wh} - set(feeders))
    for meter in households:
        ax.plot(times, [v.net_wh.get(meter, 0) / 1000 for v in rows], lw=0.8, label=meter)
    ax.axhline(0, color="black", lw=0.5)
    time_axis(ax, "net export kWh per interval", "Each household's metered net position")
    if households and len(households) <= 12:
        ax.legend(fontsize=6, ncol=4)
    out["net_positions"] = _figure_png(fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(8, 3))
    cumulative, total = [], 0
    for v in rows:
        total += v.savings
        cumulative.append(total / MICRO)
    ax.plot(times, cumulative)
    time_axis(ax, "currency", "Cumulative savings against BAU")
    out["savings"] = _figure_png(fig)
    plt.close(fig)
    return out


def write_report(obs: CommunityObserver, interval_s: int, out_dir: Path, notes: list[str]) -> Path:
    """Write report.html (plots inline, also saved as PNG files) and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    images = plots(obs, interval_s)
    community, bau = obs.totals()
    parts = [
        "<!doctype html><meta charset='utf-8'><title>tmeter demo report</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "td,th{padding:.2em .8em;text-align:right}</style>",
        f"<h1>Community {html.escape(obs.community)}</h1>",
        "<table><tr><th>cleared intervals</th><th>readings</th><th>ledger records</th>"
        "<th>community cost</th><th>BAU cost</th><th>savings</th></tr>",
        f"<tr><td>{len(obs.cleared())}</td><td>{obs.readings}</td><td>{obs.ledger_size}</td>"
        f"<td>{money(community)}</td><td>{money(bau)}</td><td>{money(bau - community)}</td></tr></table>",
    ]
    parts += [f"<p>{html.escape(n)}</p>" for n in notes]
    for name, png in images.items():
        (out_dir / f"{name}.png").write_bytes(png)
        data = base64.b64encode(png).decode()
        parts.append(f"<h2>{name.replace('_', ' ')}</h2><img alt='{name}' src='data:image/png;base64,{data}'>")
    path = out_dir / "report.html"
    path.write_text("\n".join(parts))
    return path
