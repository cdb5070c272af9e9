"""Helpers to run a vector file under CPython (in process) and MicroPython (subprocess)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from protocols.vectors import runner
from tmeter.fwtools.runner import run_micropython

VECTOR_DIR = Path(runner.__file__).parent


def vector_files() -> list[Path]:
    return sorted(VECTOR_DIR.glob("*.json"))


def expected(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"error": v["error"]} if "error" in v else {"out": v["out"]} for v in doc["vectors"]]


def run_cpython(path: Path) -> list[dict[str, Any]]:
    # Round-trip through JSON so tuples and lists compare the way MicroPython's output does.
    return json.loads(json.dumps(runner.run_file(str(path))))


def run_upy(path: Path, workdir: Path) -> list[dict[str, Any]]:
    code = f"from protocols.vectors import runner\nrunner.main({str(path)!r})\n"
    result = run_micropython(code, workdir=workdir, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"micropython failed on {path.name}:\n{result.stdout}\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])
