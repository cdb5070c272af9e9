"""pytest fixtures for the bench harness: a whole community (broker, simulated households,
the real firmware, the gateway) for a scenario, in a test's temporary folder.

    def test_my_scenario(run_community):
        result = run_community("bench/scenarios/faults.toml")   # or a Scenario object
        assert result.report.ok

Installed as the pytest plugin ``tmeter`` (entry point ``pytest11``), so a project that
depends on tmeter gets the fixture too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from sim_hardware.harness.community import RunResult, run_scenario
from sim_hardware.harness.scenario import Scenario

RunCommunity = Callable[..., RunResult]


@pytest.fixture
def run_community(tmp_path: Path) -> RunCommunity:
    """``run_community(scenario, broker="mosquitto", drain_s=120)`` runs the scenario (a
    Scenario, or the path of a scenario TOML) to its end and returns the RunResult with the
    invariant report; everything it started is stopped again."""

    def run(scenario: Scenario | str | Path, broker: str = "mosquitto", drain_s: float = 120.0) -> RunResult:
        sc = scenario if isinstance(scenario, Scenario) else Scenario.load(scenario)
        return run_scenario(sc, tmp_path / sc.name, broker=broker, drain_s=drain_s)

    return run
