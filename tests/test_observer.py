"""The community observer folds wire messages into per-interval views, ignores what it cannot
verify, and the report renders its plots."""

from __future__ import annotations

import html
from pathlib import Path

from protocols import messages, topics
from gateway.bills import MemberBill
from sim_hardware.harness.dashboard import live_table
from sim_hardware.harness.observer import CommunityObserver
from sim_hardware.harness.report import CAPTIONS, write_report

KEY = bytes(32)


def observer() -> CommunityObserver:
    return CommunityObserver("c1", lambda meter, kid: KEY if kid == 1 else None)


def feed_interval(obs: CommunityObserver, iv: int, community_cost: int, bau_cost: int) -> None:
    for meter, imp, exp in (("m1", 500, 0), ("m2", 0, 800)):
        msg = messages.reading(meter, 1, 1, iv, iv, iv * 900, iv * 900 + 900, imp, exp, 10_000, 20_000, 0)
        obs.handle(topics.meter_topic("c1", meter, "reading"), messages.encode(msg, KEY))
    result = messages.result(iv, "uniform", 120_000, 2, 500, 0, 300, community_cost, bau_cost)
    obs.handle(topics.result_topic("c1", iv), messages.encode(result))


def test_intervals_and_totals() -> None:
    obs = observer()
    feed_interval(obs, 10, 1_000_000, 1_500_000)
    feed_interval(obs, 11, -200_000, 100_000)
    status = messages.status("m1", 1, 1, 1, 9000, 1, 1, {})
    obs.handle(topics.meter_topic("c1", "m1", "status"), messages.encode(status, KEY))
    cp = messages.checkpoint("tmeter/c1", 17, "AAAA", "AAAA")
    obs.handle(topics.checkpoint_topic("c1"), messages.encode(cp))
    assert [v.iv for v in obs.cleared()] == [10, 11]
    assert obs.intervals[10].net_wh == {"m1": -500, "m2": 800}
    assert obs.totals() == (800_000, 1_600_000)
    assert obs.online == {"m1": True} and obs.ledger_size == 17 and obs.readings == 4


def test_forged_and_garbage_messages_are_counted_not_folded() -> None:
    obs = observer()
    msg = messages.reading("m1", 1, 1, 1, 5, 4500, 5400, 500, 0, 10_000, 0, 0)
    forged = messages.encode(msg, b"\x01" * 32)
    obs.handle(topics.meter_topic("c1", "m1", "reading"), forged)
    obs.handle("tm/v1/c1/market/5/result", b"\xff\x00garbage")
    obs.handle("not/a/topic", b"")
    assert obs.readings == 0 and not obs.intervals
    assert obs.rejected == {"bad_tag": 1, "bad_json": 1, "bad_topic": 1}


def test_report_and_table_render(tmp_path: Path) -> None:
    obs = observer()
    for iv in range(20, 30):
        feed_interval(obs, iv, 100_000 * iv, 110_000 * iv)
    bills = [MemberBill("m1", 20, 29, 10, 5000, 1000, 1_230_000, 1_500_000, "household alone (simulated)"),
             MemberBill("m2", 20, 29, 10, 0, 4000, -200_000, -250_000, "household alone (simulated)")]
    path = write_report(obs, 900, tmp_path, ["a note"], bills, [(iv, 100, 150) for iv in range(20, 30)])
    text = path.read_text()
    assert text.count("data:image/png;base64,") == 3
    assert "a note" in text and "welfare objective" in text
    assert "<td>1.23</td><td>1.50</td><td>0.27</td>" in text  # m1 paid 1.23, alone 1.50, saved 0.27
    assert "<td>all</td><td>5.00</td><td>5.00</td><td>1.03</td><td>1.25</td><td>0.22</td>" in text
    for name in ("prices", "net_positions", "savings"):
        assert (tmp_path / f"{name}.png").read_bytes().startswith(b"\x89PNG")
        # Each plot says how to read it, just above it.
        assert text.index(html.escape(CAPTIONS[name])) < text.index(f"alt='{name}'")
    table = live_table(obs, 900, bills)
    assert table.row_count == 10
    assert "saved 0.22" in str(table.caption) and "1 of 2 households better off" in str(table.caption)
    assert "welfare objective" in str(table.caption)


def test_the_live_table_fits_80_columns_with_every_header_whole() -> None:
    from rich.console import Console

    from sim_hardware.harness.dashboard import COLUMNS

    obs = observer()
    for iv in range(1978944, 1978960):  # a day in 2026 at 15 min: 7-digit intervals
        feed_interval(obs, iv, -12_345_678, 99_999_999)  # wide money
    empty = messages.result(1978960, "uniform", 0, 0, 0, 0, 0, 0, 0)
    obs.handle(topics.result_topic("c1", 1978960), messages.encode(empty))
    bills = [MemberBill("hh000", 1, 2, 2, 100, 0, 1_000_000, 2_000_000, "household alone (simulated)")]
    console = Console(width=80, record=True, color_system=None)
    console.print(live_table(obs, 900, bills))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    header = next(line for line in text.splitlines() if "UTC" in line)
    assert all(name in header for name in COLUMNS), header
    last = [line for line in text.splitlines() if "│" in line][-1]
    assert "-" in last.split("│")[2] and "0.0000" not in last  # no bids: no price, not 0.0000


def test_only_the_runs_intervals_are_the_runs() -> None:
    obs = observer()
    for iv in range(10, 20):
        feed_interval(obs, iv, 100, 200)
    obs.span = (12, 15)
    assert [v.iv for v in obs.cleared()] == [12, 13, 14] and obs.totals() == (300, 600)
