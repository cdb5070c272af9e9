"""``tmeter study collective``: one simulated day under every rule. The rules give different
dispatch and totals; the least core leaves nobody worse off than alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tmeter.cli import main
from gateway.market.terms import RULES
from sim_hardware.harness.study import LEAST_CORE, Household, simulate


def test_one_day_under_every_rule() -> None:
    households = [Household.make(i, seed=0, source="synthetic") for i in range(8)]
    study = simulate(households, start=1717200000, days=1, imp=0.30, exp=0.08)
    assert len(study.times) == 96
    bau = float(study.bau_cost.sum())
    totals = {rule: float(study.cost[rule].sum()) for rule in study.cost}
    assert set(totals) == set(RULES) | {LEAST_CORE}
    # The rule enters the members' problems: sharing the grid bill hides part of the import
    # price from each member, who then keeps flexible load the marginal rule sheds.
    for rule in ("equal", "proportional"):
        assert study.max_dq[rule] > 0.01, rule
        assert study.grid_kwh[rule][0] > study.grid_kwh["marginal"][0] + 1.0, rule
        assert totals[rule] > totals["marginal"] + 0.01, (rule, totals)
    assert totals["marginal"] < bau
    # The least core keeps the optimal dispatch and its total, and nobody pays more than alone.
    assert np.isclose(totals[LEAST_CORE], totals["marginal"])
    assert (study.saving(LEAST_CORE) >= -1e-9).all()
    assert np.allclose(study.least_core.alone - study.least_core.cost, study.saving(LEAST_CORE))
    # Marginal pricing inside [export, import] leaves nobody worse off than alone either.
    assert (study.saving("marginal") >= -1e-9).all()


def test_cli_prints_the_tables_and_saves_the_plot(tmp_path: Path, capsys) -> None:
    code = main(["study", "collective", "--days", "1", "--members", "5", "--coalitions", "3",
                 "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    for rule in (*RULES, LEAST_CORE, "worse off", "h004"):
        assert rule in out
    png = tmp_path / "study_collective.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_start_date_is_a_usage_error(tmp_path: Path, capsys) -> None:
    assert main(["study", "collective", "--start", "June", "--out", str(tmp_path)]) == 2
    assert "tmeter study" in capsys.readouterr().err
