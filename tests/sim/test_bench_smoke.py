"""bench/sim_throughput.py still runs end to end (tiny and short: no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_sim_throughput_bench_runs() -> None:
    result = subprocess.run(
        [sys.executable, "bench/sim_throughput.py", "--meters", "2", "--seconds", "0.3",
         "--rounds", "1"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "ratio sim/bare" in result.stdout
