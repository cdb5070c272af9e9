"""The `tmeter` command line: one entry point, one module per command group.

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and keeps its
heavy imports inside functions, so ``tmeter --help`` stays fast on a Raspberry Pi and a
gateway install without the simulator extras still lists (and explains) every group.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from importlib import metadata

# (command, module, one-line help). A group whose module is missing is listed, and says why.
COMMANDS: list[tuple[str, str, str]] = [
    ("demo", "gateway.commands.demo", "run a simulated community end to end, on one machine"),
    ("gateway", "gateway.commands.gateway", "run the gateway daemon and manage its broker config"),
    ("sim", "sim_hardware.cli", "run simulated meters, batteries and households"),
    ("fw", "gateway.commands.fw", "build, deploy and run the meter firmware"),
    ("provision", "gateway.commands.provision", "create a meter's key and device config"),
    ("clear", "gateway.market.cli", "clear one market interval from a JSON bid file"),
    ("ledger", "gateway.commands.ledger", "verify the ledger, prove inclusion, export checkpoints"),
    ("study", "gateway.market.study", "compare market designs on simulated households"),
    ("bench", "sim_hardware.bench_cli", "run a bench scenario (simulator, firmware, gateway)"),
]


def version() -> str:
    try:
        return metadata.version("tmeter")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tmeter",
        description="Transactive smart meters: firmware, gateway, market and simulator.",
    )
    parser.add_argument("--version", action="version", version=f"tmeter {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module_name, help_text in COMMANDS:
        cmd = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not module_name.startswith(exc.name):
                missing = exc.name or "a dependency"
                cmd.set_defaults(_unavailable=f"needs the package {missing!r}: {exc}")
            else:
                cmd.set_defaults(_unavailable="not available in this build")
            continue
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    unavailable = getattr(args, "_unavailable", None)
    if unavailable:
        print(f"tmeter {args.command}: {unavailable}", file=sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
