"""``tmeter clear``: the bid file in, prices and awards out; every bad input is exit 2 + a message."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tmeter.cli import main

GOOD = {
    "community": {"import_price": 0.30, "export_price": 0.08, "import_capacity": None,
                  "export_capacity": None, "allocation": "none"},
    "bids": [
        {"meter": "m1", "quadratic": {"a": 4.0, "b": 0.13, "q_min": -2.0, "q_max": 0.0}},
        {"meter": "m2", "curve": [[-1.0, 0.05], [0.0, 0.05], [0.0, 0.10], [3.0, 0.20]]},
        {"meter": "m3", "curve": [[-1.5, 0.40], [0.0, 0.40]], "note": "extra keys are fine"},
    ],
    "p2p": {"k": 10, "positions": {"m1": [0, 0], "m2": [1, 0], "m3": [0, 2]},
            "preferences": {"m1": 0.01}},
}


def write(tmp_path: Path, data: object) -> str:
    path = tmp_path / "bids.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def clear_json(capsys, path: str, *extra: str) -> dict:
    assert main(["clear", "--bids", path, "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_uniform_json_has_the_documented_keys(tmp_path: Path, capsys) -> None:
    out = clear_json(capsys, write(tmp_path, GOOD))
    for key in ("price", "awards", "objective", "grid_import", "grid_export", "bau_cost",
                "community_cost", "savings", "member_costs"):
        assert key in out
    assert out["price"] == pytest.approx(0.15)
    assert out["awards"] == pytest.approx({"m1": 0.0, "m2": 1.5, "m3": -1.5})
    assert out["community_cost"] <= out["bau_cost"]


def test_p2p_json_lists_trades(tmp_path: Path, capsys) -> None:
    out = clear_json(capsys, write(tmp_path, GOOD), "--mechanism", "p2p")
    assert out["trades"] == [{"from": "m2", "to": "m3", "quantity": pytest.approx(1.5),
                              "price": pytest.approx(0.15)}]
    assert out["price"] is None


def test_distributed_solver_reports_iterations(tmp_path: Path, capsys) -> None:
    out = clear_json(capsys, write(tmp_path, GOOD), "--solver", "distributed")
    assert out["convergence"]["converged"] and out["convergence"]["iterations"] > 0
    assert out["price"] == pytest.approx(0.15, abs=1e-6)


def test_table_for_humans(tmp_path: Path, capsys) -> None:
    assert main(["clear", "--bids", write(tmp_path, GOOD)]) == 0
    out = capsys.readouterr().out
    assert "price" in out and "m3" in out and "savings" in out


def bad(*, bids=None, community=None, raw: str | None = None):
    data = {"community": community or GOOD["community"], "bids": bids or GOOD["bids"]}
    return raw if raw is not None else data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (bad(bids=[{"meter": "m9", "curve": [[0, 0.2], [1, 0.1]]}]), "'m9': non-monotone"),
        (bad(bids=[{"meter": "m9", "curve": [[1, 0.1], [0, 0.2]]}]), "'m9': q_min > q_max"),
        (bad(bids=[{"meter": "m9", "quadratic": {"a": 1, "b": 0, "q_min": 1, "q_max": 0}}]),
         "'m9': q_min (1) > q_max (0)"),
        (bad(raw='{"community": {}, "bids": [{"meter": "m9", "curve": [[0, NaN]]}]}'),
         "'m9': quantities and prices must be finite"),
        (bad(bids=[{"meter": "m1", "curve": [[0, 0.1]]}, {"meter": "m1", "curve": [[0, 0.1]]}]),
         "bid #1 'm1': duplicate meter"),
        (bad(bids=[{"curve": [[0, 0.1]]}]), "bid #0 'None': 'meter'"),
        (bad(bids=[{"meter": "m9", "curve": [[0, "cheap"]]}]), "'m9': curve point 0"),
        (bad(bids=[{"meter": "m9"}]), "'m9': a bid needs exactly one of"),
        (bad(community={"import_price": 0.1, "export_price": 0.2}), "unbounded arbitrage"),
        (bad(community={"import_price": 0.3, "allocation": "lottery"}), "allocation must be"),
        (bad(raw="{not json"), "cannot read bids"),
        (bad(bids=[{"meter": "load", "curve": [[-2, 0.3]]}], community={"import_price": None}),
         "import at least 2"),
    ],
)
def test_invalid_input_is_exit_2_with_a_message(tmp_path: Path, capsys, data, message: str) -> None:
    assert main(["clear", "--bids", write(tmp_path, data), "--json"]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""
    assert "Traceback" not in captured.err


def test_missing_file_and_real_process(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tmeter", "clear", "--bids", str(tmp_path / "nope.json")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "cannot read bids" in result.stderr and "Traceback" not in result.stderr
