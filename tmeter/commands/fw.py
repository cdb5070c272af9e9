"""`tmeter fw`: build, deploy and run the meter firmware.

  tmeter fw build [--out DIR]                       mpy-cross: xtensawin + unix bytecode
  tmeter fw deploy --port PORT [--config FILE]      mpremote: copy build and config to a board
  tmeter fw run --config FILE [--state-dir DIR]     one meter under the unix port (or CPython)

A device config that the firmware would refuse is answered before anything starts or is copied:
one line naming the file and the problem, exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tmeter.fwtools.build import DEFAULT_BUILD as DEFAULT_OUT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="fw_command", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="compile every firmware module with mpy-cross")
    b.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (%(default)s)")
    d = sub.add_parser("deploy", help="copy the build and a device config onto a board")
    d.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    d.add_argument("--config", type=Path, help="config.json written by `tmeter provision`")
    d.add_argument("--build", type=Path, default=DEFAULT_OUT, help="build folder (%(default)s)")
    d.add_argument("--dry-run", action="store_true", help="print the mpremote commands only")
    r = sub.add_parser("run", help="run one meter on this machine")
    r.add_argument("--config", type=Path, required=True, help="the meter's config.json")
    r.add_argument("--state-dir", type=Path, help="queue and state folder (default: beside config)")
    r.add_argument("--runtime", choices=("micropython", "cpython"), default="micropython",
                   help="the MicroPython unix port (as on a board) or CPython (%(default)s)")
    r.add_argument("--heapsize", default=None, help="MicroPython heap, e.g. 128K")
    r.add_argument("--build", type=Path, help="run a `fw build` output instead of the sources")


def build(out: Path) -> dict:
    from tmeter.fwtools import build as fw_build
    return fw_build.build(out)


# The Modbus links the unix port opens (firmware/hal_unix.py Board.open_link); "uart" is a board's.
UNIX_LINKS = ("tcp:", "tty:")


def device_config_problem(path: Path, on_host: bool) -> str | None:
    """Why the device config at ``path`` cannot run a meter (``on_host``: on this machine, under
    the unix port or CPython), in one line naming the file; None if it can. Read and checked
    exactly as the firmware will (protocols/devconfig.py), so a mistake is answered here rather
    than by a traceback of the started interpreter."""
    from protocols import devconfig  # noqa: PLC0415

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return f"{path}: no such file"
    except IsADirectoryError:
        return f"{path}: is a directory, not a device config"
    except (OSError, UnicodeDecodeError) as exc:
        return f"{path}: cannot read: {exc}"
    try:
        cfg = devconfig.parse(text)
    except json.JSONDecodeError as exc:
        return f"{path}: not JSON: {exc}"
    except ValueError as exc:
        return f"{path}: {exc}"
    except TypeError as exc:  # a value of the wrong type meets a comparison in parse()
        return f"{path}: a value of the wrong type: {exc}"
    link = cfg["modbus"]["link"]
    if on_host and not (type(link) is str and link.startswith(UNIX_LINKS)):
        return (f"{path}: modbus.link: expected tcp:HOST:PORT or tty:PATH on this machine, got"
                f" {json.dumps(link)} (a board's link; provision with --modbus-link)")
    return None


def _refused(path: Path, on_host: bool) -> bool:
    problem = device_config_problem(path, on_host)
    if problem is not None:
        print(f"tmeter: {problem}", file=sys.stderr)
    return problem is not None


def run(args: argparse.Namespace) -> int:
    import shlex
    import subprocess

    from tmeter.fwtools import build as fw_build
    from tmeter.fwtools.runner import firmware_command

    if args.fw_command == "build":
        built = build(args.out)
        for target, files in built.items():
            print(f"{target}: {len(files)} modules in {args.out / target}")
        return 0
    if args.fw_command == "deploy":
        if args.config is not None and _refused(args.config, on_host=False):
            return 2
        if not (args.build / "xtensawin").is_dir():
            build(args.build)
        if args.config is not None:
            fw_build.write_plan(args.config)
        cmds = fw_build.deploy_commands(args.build, args.port, args.config)
        for cmd in cmds:
            print(shlex.join(cmd))
            if not args.dry_run:
                result = subprocess.run(cmd)
                if result.returncode != 0:
                    return result.returncode
        return 0
    # run
    if _refused(args.config, on_host=True):
        return 2
    state = args.state_dir or args.config.parent
    state.mkdir(parents=True, exist_ok=True)
    fw_build.write_plan(args.config)
    cmd, env = firmware_command(args.config, state, args.runtime, args.heapsize, args.build)
    print(shlex.join(cmd), flush=True)
    try:
        return subprocess.run(cmd, env=env, cwd=state).returncode
    except KeyboardInterrupt:
        return 130
