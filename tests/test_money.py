"""protocols/money.py: the rounding of energy x price, and shares that add up exactly, checked
against exact fractions (an independent formulation) and under the MicroPython interpreter."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import money

weights = st.lists(st.integers(0, 10**9), min_size=1, max_size=40)


@given(st.integers(-10**12, 10**12), st.integers(0, 10**7))
def test_amount_is_the_exact_product_rounded_half_up(wh: int, price: int) -> None:
    exact = Fraction(wh * price, 1000)
    assert money.amount(wh, price) == (exact + Fraction(1, 2)).__floor__()


@given(st.integers(-10**15, 10**15), weights)
def test_split_adds_up_and_each_part_is_within_one_of_its_quota(total: int, w: list[int]) -> None:
    parts = money.split(total, w)
    assert sum(parts) == total and len(parts) == len(w)
    s = sum(w) or len(w)
    for part, weight in zip(parts, w if any(w) else [1] * len(w)):
        quota = Fraction(total * weight, s)
        assert abs(part - quota) < 1  # Hamilton: floor or ceiling of the exact quota


def test_split_gives_the_remainder_to_the_largest_fractions_then_the_earliest() -> None:
    assert money.split(10, [1, 1, 1]) == [4, 3, 3]
    assert money.split(-10, [1, 1, 1]) == [-4, -3, -3]
    assert money.split(7, [1, 2, 4]) == [1, 2, 4]
    assert money.split(5, [0, 0]) == [3, 2]
    assert money.split(3, []) == []
    with pytest.raises(ValueError, match="negative"):
        money.split(3, [1, -1])


@pytest.mark.micropython
def test_same_results_under_micropython(micropython) -> None:  # noqa: ANN001
    cases = "money.amount(1234567, 299999), money.amount(-1, 500), money.split(-1000001, [3, 0, 7, 7])"
    out = micropython(f"from protocols import money\nprint(repr(({cases})))")
    assert out.stdout.strip() == repr((money.amount(1234567, 299999), money.amount(-1, 500),
                                       money.split(-1000001, [3, 0, 7, 7])))
