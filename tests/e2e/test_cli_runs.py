"""`tmeter demo` and `tmeter bench run` as a user runs them: from a working folder, relative
output paths, a short run that must pass its invariants; bad scenario files are clear errors."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest


def tmeter(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tmeter", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.micropython
def test_demo_short_run_with_relative_output(tmp_path: Path) -> None:
    result = tmeter(tmp_path, "demo", "--meters", "3", "--hours", "1.5", "--out", "run")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "saved" in result.stdout and "report:" in result.stdout
    assert (tmp_path / "run" / "report.html").exists()
    verify = tmeter(tmp_path, "ledger", "verify", "--db", "run/gateway.db")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # Money: one bill per household, against the same household alone; the operator's command
    # gives the same bills from the database and the alone file the demo wrote.
    with (tmp_path / "run" / "bills.csv").open() as f:
        bills = list(csv.DictReader(f))
    assert [b["member"] for b in bills] == ["hh000", "hh001", "hh002"]
    assert all(int(b["intervals"]) >= 4 and b["alone_basis"].startswith("household alone") for b in bills)
    again = tmeter(tmp_path, "bills", "--db", "run/gateway.db", "--alone", "run/alone.csv", "--csv", "again.csv")
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "again.csv").read_text() == (tmp_path / "run" / "bills.csv").read_text()


def test_demo_refuses_an_earlier_run_folder(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "gateway.db").write_bytes(b"")
    result = tmeter(tmp_path, "demo", "--meters", "1", "--hours", "1", "--out", "run")
    assert result.returncode == 1 and "earlier run" in result.stdout


@pytest.mark.mosquitto
def test_bench_run_scenario_file(tmp_path: Path) -> None:
    (tmp_path / "s.toml").write_text('meters = 2\nhours = 1.5\nspeed = 720\nruntime = "cpython"\n'
                                     '[[faults]]\nat_h = 0.5\naction = "gateway_kill"\ndown_s = 1\n')
    result = tmeter(tmp_path, "bench", "run", "s.toml", "--out", "b")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "fault applied" in result.stdout and "invariants" in result.stdout
    assert result.stdout.count("iv ") >= 4  # one line per cleared interval


@pytest.mark.parametrize("text, message", [
    ("meters = 0\n", "positive"),
    ("meters = 2\ncolour = 1\n", "unknown scenario keys: colour"),
    ("meters = 2\n[[faults]]\nat_h = 1\naction = \"flood\"\n", "unknown fault action"),
    ("meters = 2\n[[faults]]\nat_h = 1\naction = \"meter_kill\"\n", "needs a target"),
    ("meters = [\n", "s.toml"),
])
def test_bench_rejects_bad_scenarios(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "s.toml").write_text(text)
    result = tmeter(tmp_path, "bench", "run", "s.toml", timeout=60)
    assert result.returncode == 2
    assert message in result.stdout
