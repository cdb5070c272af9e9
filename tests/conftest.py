"""Shared fixtures: a real Mosquitto on a free port, and a MicroPython script runner."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from sim_hardware.harness.mosquitto import MosquittoBroker
from tmeter.fwtools.runner import run_micropython


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A running Mosquitto on 127.0.0.1 with anonymous access; stopped after the test."""
    if shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists():
        pytest.fail("mosquitto is not installed (.ci/run installs it)")
    broker = MosquittoBroker(workdir=tmp_path / "mosquitto")
    broker.workdir.mkdir(parents=True, exist_ok=True)
    with broker:
        yield broker


@pytest.fixture
def micropython(tmp_path: Path) -> Callable[..., CompletedProcess[str]]:
    """``micropython(code, heapsize=None, timeout=120)`` runs code under the unix port.

    Raises with MicroPython's own output when the script fails, so a test reads the traceback.
    """

    def run(code: str, *, check: bool = True, **kwargs: object) -> CompletedProcess[str]:
        kwargs.setdefault("workdir", tmp_path)
        result = run_micropython(code, **kwargs)  # type: ignore[arg-type]
        if check and result.returncode != 0:
            raise AssertionError(
                f"micropython exited {result.returncode}\n--- stdout\n{result.stdout}"
                f"\n--- stderr\n{result.stderr}"
            )
        return result

    return run
