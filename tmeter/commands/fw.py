"""`tmeter fw`: build, deploy and run the meter firmware.

  tmeter fw build [--out DIR]                       mpy-cross: xtensawin + unix bytecode
  tmeter fw deploy --port PORT [--config FILE] [--romfs]  mpremote: build and config to a board
  tmeter fw run --config FILE [--state-dir DIR]     one meter under the unix port (or CPython)
  tmeter fw ota --bundle DIR --key FILE --version X.Y.Z --meters m01,m02 [--wave N] [--timeout S]
                                                    over-the-air update in waves (tmeter/fwtools/ota.py)
  tmeter fw versions --meters m01,m02               each meter's version from its retained status
  tmeter fw config M NAME=VALUE ... --config FILE   remote settings; fw rotate-key M, fw
                                                    factory-reset M (tmeter/commands/fwremote.py)

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
    d.add_argument("--romfs", action="store_true",
                   help="the image into the board's ROMFS partition (MicroPython >= 1.25)")
    r = sub.add_parser("run", help="run one meter on this machine")
    r.add_argument("--config", type=Path, required=True, help="the meter's config.json")
    r.add_argument("--state-dir", type=Path, help="queue and state folder (default: beside config)")
    r.add_argument("--runtime", choices=("micropython", "cpython"), default="micropython",
                   help="the MicroPython unix port (as on a board) or CPython (%(default)s)")
    r.add_argument("--heapsize", default=None, help="MicroPython heap, e.g. 128K")
    r.add_argument("--build", type=Path, help="run a `fw build` output instead of the sources")
    o = sub.add_parser("ota", help="update meters over the air, in waves")
    o.add_argument("--bundle", type=Path,
                   help="a `fw build` target: build/firmware/xtensawin (boards) or .../unix")
    o.add_argument("--key", type=Path, help="the release key file (64 hex digits)")
    o.add_argument("--key-id", type=int, default=1, help="the release key's id (%(default)s)")
    o.add_argument("--version", help="the bundle's version, MAJOR.MINOR.PATCH")
    o.add_argument("--status", action="store_true", help="report versions only (as fw versions)")
    v = sub.add_parser("versions", help="each meter's firmware version from its retained status")
    for p in (o, v):
        p.add_argument("--meters", required=True, help="comma-separated meter ids")
        p.add_argument("--config", type=Path, help="gateway.toml: broker, community, MQTT login")
        p.add_argument("--broker", help="HOST:PORT of an anonymous broker instead of --config")
        p.add_argument("--community", default="c1", help="with --broker (%(default)s)")
    from tmeter.commands import fwremote
    fwremote.add_arguments(sub)
    o.add_argument("--wave", type=int, default=1, help="meters per wave (%(default)s)")
    o.add_argument("--timeout", type=float, default=900.0,
                   help="seconds a wave may take, commit included (%(default)s)")


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
            what = (f"a {files[0].stat().st_size} byte image and its loader"
                    if target.endswith("romfs") else f"{len(files)} modules")
            print(f"{target}: {what} in {args.out / target}")
        return 0
    if args.fw_command in ("ota", "versions"):
        from tmeter.fwtools.ota import OtaError
        try:
            return ota(args)
        except OtaError as exc:
            print(f"tmeter: {exc}", file=sys.stderr)
            return 2
    if args.fw_command in ("config", "rotate-key", "factory-reset"):
        from tmeter.commands import fwremote
        return fwremote.run(args)
    if args.fw_command == "deploy":
        if args.config is not None and _refused(args.config, on_host=False):
            return 2
        if not (args.build / "xtensawin").is_dir():
            build(args.build)
        if args.config is not None:
            fw_build.write_plan(args.config)
        cmds = fw_build.deploy_commands(args.build, args.port, args.config, args.romfs)
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


def _broker(args: argparse.Namespace):
    from tmeter.fwtools import ota as fw_ota

    if args.broker:
        host, _, port = args.broker.rpartition(":")
        if not host or not port.isdigit():
            raise fw_ota.OtaError(f"--broker {args.broker}: expected HOST:PORT")
        return fw_ota.Broker(host, int(port), args.community)
    if args.config is None:
        raise fw_ota.OtaError("give --config gateway.toml (or --broker HOST:PORT)")
    from gateway import config as gw_config
    from gateway.mosquitto_conf import ota_login

    try:
        cfg = gw_config.load(args.config)
    except gw_config.ConfigError as exc:
        raise fw_ota.OtaError(str(exc).splitlines()[0]) from None
    m = cfg.mqtt
    return fw_ota.Broker(m.host, m.port, cfg.community, ota_login(m.user) if m.user else None,
                         m.password, m.tls, m.ca)


def ota(args: argparse.Namespace) -> int:
    """`fw ota` and `fw versions`: a table of every meter's state; exit 1 if a wave failed."""
    from rich.console import Console

    from tmeter.fwtools import ota as fw_ota

    meters = [m for m in args.meters.split(",") if m]
    if not meters:
        raise fw_ota.OtaError("--meters: no meter ids")
    console = Console()
    broker = _broker(args)
    if args.fw_command == "versions" or args.status:
        r = fw_ota.Rollout(broker, meters)
        try:
            r.settle(2.0)
            console.print(fw_ota.table(list(r.meters.values()), "firmware versions"))
        finally:
            r.close()
        return 0
    if args.bundle is None or args.key is None or args.version is None:
        raise fw_ota.OtaError("fw ota needs --bundle, --key and --version (or --status)")
    version = fw_ota.version_number(args.version)
    key = fw_ota.read_key(args.key)
    msg, offer = fw_ota.signed_offer(args.bundle, version, key, args.key_id)
    server = fw_ota.Server(args.bundle, msg)
    r = fw_ota.Rollout(broker, meters, server, offer)
    ok = True
    try:
        r.settle(1.0)
        waves = [meters[i:i + max(1, args.wave)] for i in range(0, len(meters), max(1, args.wave))]
        for n, wave in enumerate(waves, 1):
            console.print(f"wave {n} of {len(waves)}: {', '.join(wave)} -> {fw_ota.fw_text(version)}")
            if not r.wave(wave, version, args.timeout):
                ok = False
                console.print(f"wave {n} failed: later waves not offered")
                break
        console.print(fw_ota.table(list(r.meters.values()), f"rollout of {fw_ota.fw_text(version)}"))
    finally:
        r.close()
    return 0 if ok else 1
