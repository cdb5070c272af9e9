"""The award book (firmware/awards.py): the price an award carries for the meter to act on."""

from __future__ import annotations

from firmware.awards import AwardBook
from protocols import messages, topics

KEY = bytes(range(32))
IV = 1_978_946
INTERVAL_S = 900


def _received(mech: str, q_wh: int, price: int, trades: list[list]) -> tuple[int, int]:
    book = AwardBook("m01", 1, KEY, INTERVAL_S, {})
    body = messages.encode(messages.award("m01", 1, IV, IV * INTERVAL_S - 60, mech, q_wh, price, trades), KEY)
    assert book.receive(topics.meter_topic("c1", "m01", "award"), body, (IV * INTERVAL_S - 50) * 1000) == IV
    return book.take(IV)


def test_a_uniform_award_carries_the_community_price() -> None:
    assert _received("uniform", -200, 175_000, []) == (-200, 175_000)


def test_a_p2p_award_takes_the_price_of_its_largest_trade() -> None:
    # No community price in p2p (0): a member that buys from the grid at the margin faces the
    # import price, and the battery then only discharges (firmware/app.py apply_award); read as
    # 0 (<= the feed-in price) it could only charge, and 100 demo households imported at night
    # what their batteries held.
    got = _received("p2p", -600, 0, [["grid", -500, 300_000], ["hh02", -100, 210_000]])
    assert got == (-600, 300_000)
    assert _received("p2p", 400, 0, [["hh03", 300, 120_000], ["grid", 100, 50_000]]) == (400, 120_000)


def test_a_p2p_award_without_trades_has_no_price() -> None:
    assert _received("p2p", 0, 0, []) == (0, 0)
