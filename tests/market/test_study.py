"""``tmeter study collective``: one simulated day, community cheaper than BAU under every rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tmeter.cli import main
from gateway.market.terms import ALLOCATIONS
from sim_hardware.harness.study import Household, simulate


def test_one_day_community_costs_are_below_bau_for_every_rule() -> None:
    households = [Household.make(i, seed=0, source="synthetic") for i in range(8)]
    study = simulate(households, start=1717200000, days=1, imp=0.30, exp=0.08)
    assert len(study.times) == 96
    bau = float(study.bau_cost.sum())
    totals = {rule: float(study.cost[rule].sum()) for rule in ALLOCATIONS}
    assert all(total < bau for total in totals.values()), (totals, bau)
    # The rules move money between members, never to or from the community.
    assert np.allclose(list(totals.values()), totals["none"])
    # Marginal pricing inside [export, import] leaves nobody worse off than alone.
    assert (study.cost["none"] <= study.bau_cost + 1e-9).all()


def test_cli_prints_the_table_and_saves_the_plot(tmp_path: Path, capsys) -> None:
    code = main(["study", "collective", "--days", "1", "--members", "5", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    for rule in ALLOCATIONS:
        assert rule in out
    png = tmp_path / "study_collective.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_start_date_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert main(["study", "collective", "--start", "June", "--out", str(tmp_path)]) == 2
    assert "tmeter study" in capsys.readouterr().err
