"""Battery churn (sim_hardware/harness/churn.py): per interval min(total charged, total
discharged) across batteries, checked against a brute-force definition on random series."""

from hypothesis import given, strategies as st

import pytest

from sim_hardware.harness.churn import churn_from_flows_wh, churn_wh, interval_churn_wh

flows = st.lists(st.lists(st.integers(-5000, 5000), min_size=1, max_size=6), max_size=20)


def test_batteries_moving_one_way_do_not_churn() -> None:
    assert churn_wh([[-1000, -200, 0], [300, 400, 0]]) == 0


def test_one_battery_charging_from_another_churns_the_smaller_side() -> None:
    # 1.2 kWh in, 1.5 kWh out: 1.2 kWh went from battery to battery.
    assert interval_churn_wh([-1200, 1000, 500]) == 1200


@given(flows)
def test_churn_is_the_energy_both_sides_could_have_kept(series: list[list[int]]) -> None:
    # Independent formulation: the energy batteries moved minus what the feeder saw of them.
    moved = sum(abs(e) for row in series for e in row)
    net = sum(abs(sum(row)) for row in series)
    assert 2 * churn_wh(series) == moved - net
    charged = [[max(-e, 0) for e in row] for row in series]
    discharged = [[max(e, 0) for e in row] for row in series]
    assert churn_from_flows_wh(charged, discharged) == churn_wh(series)


def test_series_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        churn_from_flows_wh([[1]], [])
