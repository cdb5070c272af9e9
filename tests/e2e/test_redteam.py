"""The red-team replay of issue #12 (sim_hardware/harness/redteam.py, printed by bench/redteam.py)
against one gateway set up as the README says: real Mosquitto with the generated password and
ACL files, `tmeter gateway run` as a child process, meters from `tmeter provision`. The whole
replay runs once (about 80 s on two cores); each attack is its own test of its row."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from sim_hardware.harness.redteam import ATTACKS, Row, replay

pytestmark = pytest.mark.mosquitto


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Row]:
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is not installed (.ci/run installs it)")
    done = replay(tmp_path_factory.mktemp("redteam"))
    return dict(zip(ATTACKS, done, strict=True))


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_attack_is_held(rows: dict[str, Row], attack: str) -> None:
    r = rows[attack]
    assert r.passed, f"{r.attack}: expected {r.expected}; got {r.outcome} (counters {r.counters})"
    assert r.lost == 0, f"{r.attack}: {r.lost} readings acked but not stored"
    assert r.wrong_settlements == 0, f"{r.attack}: {r.wrong_settlements} settlement lines for forged data"


def test_the_refusals_are_counted_by_reason(rows: dict[str, Row]) -> None:
    """The counters an operator reads on /status name each refusal (gateway/README.md, Counters)."""
    assert rows["span"].counters.get("span_out_of_range") == 1
    assert rows["counter"].counters.get("counter_mismatch") == 1
    assert {"bad_frame", "bad_tag", "too_large", "topic_mismatch"} <= rows["malformed"].counters.keys()
    assert rows["clock"].counters.get("clock_hold", 0) >= 1
    assert rows["removed"].counters.get("db_replaced") == 1
