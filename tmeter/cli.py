"""The `tmeter` command line: one entry point, one module per command group (tmeter/commands/).

Each command module exposes ``add_arguments(parser)`` and ``run(args) -> int``. Only the group
being run is imported, so ``tmeter --help`` stays fast on a Raspberry Pi. A group that needs an
optional extra which is not installed says so in one line (``pip install 'tmeter[demo]'``)
instead of failing with a traceback: a core install is exactly what a gateway needs. A bad
gateway configuration, read by any command, is answered here the same way: one line per mistake
naming the file and the key, exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType


@dataclass(frozen=True)
class Group:
    name: str
    module: str
    help: str
    extras: tuple[str, ...] = ()  # optional dependencies of pyproject.toml it needs


COMMANDS: list[Group] = [
    Group("demo", "tmeter.commands.demo", "run a simulated community end to end, on one machine",
          ("demo",)),
    Group("gateway", "tmeter.commands.gateway", "run the gateway daemon and manage its broker config"),
    Group("sim", "tmeter.commands.sim", "run simulated meters, batteries and households", ("sim",)),
    Group("fw", "tmeter.commands.fw", "build, deploy and run the meter firmware", ("firmware",)),
    Group("provision", "tmeter.commands.provision", "create a meter's key and device config"),
    Group("clear", "tmeter.commands.clear", "clear one market interval from a JSON bid file"),
    Group("ledger", "tmeter.commands.ledger", "verify the ledger, prove inclusion, export checkpoints"),
    Group("bills", "tmeter.commands.bills", "each member's bill over a period, in the community and alone"),
    Group("study", "tmeter.commands.study", "compare market designs on simulated households",
          ("plots",)),
    Group("bench", "tmeter.commands.bench", "run a bench scenario (simulator, firmware, gateway)",
          ("sim", "firmware")),
]

DIST = "tmeter"
_REQUIREMENT = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def version() -> str:
    try:
        return metadata.version(DIST)
    except metadata.PackageNotFoundError:
        return "0+unknown"


def _extra_requirements(extra: str, requires: list[str], seen: set[str]) -> list[str]:
    """Distribution names an extra needs, following ``tmeter[a,b]`` references to other extras."""
    names: list[str] = []
    for line in requires:
        marker = _EXTRA_MARKER.search(line)
        match = _REQUIREMENT.match(line)
        if marker is None or marker.group(1) != extra or match is None:
            continue
        name, inner = match.group(1), match.group(2)
        if name.lower() == DIST:
            for sub in (inner or "").split(","):
                sub = sub.strip()
                if sub and sub not in seen:
                    seen.add(sub)
                    names += _extra_requirements(sub, requires, seen)
        else:
            names.append(name)
    return names


def missing_for(extras: tuple[str, ...]) -> list[str]:
    """Distributions of ``extras`` that are not installed. Empty when tmeter itself is not an
    installed distribution (a bare checkout): the import then tells."""
    try:
        requires = metadata.requires(DIST) or []
    except metadata.PackageNotFoundError:
        return []
    missing = []
    for extra in extras:
        for name in _extra_requirements(extra, requires, {extra}):
            try:
                metadata.version(name)
            except metadata.PackageNotFoundError:
                if name not in missing:
                    missing.append(name)
    return missing


def install_hint(extras: tuple[str, ...]) -> str:
    return f"pip install 'tmeter[{','.join(extras)}]'"


def load(group: Group) -> tuple[ModuleType | None, str | None]:
    """The group's module, or why it cannot run here, in one line."""
    missing = missing_for(group.extras)
    if missing:
        which = ("extra " if len(group.extras) == 1 else "extras ") + ", ".join(group.extras)
        return None, f"needs the {which} (missing {', '.join(missing)}): {install_hint(group.extras)}"
    try:
        return importlib.import_module(group.module), None
    except ModuleNotFoundError as exc:  # an install broken in some other way
        hint = f"; {install_hint(group.extras)}" if group.extras else ""
        return None, f"cannot load: {exc}{hint}"


def build_parser(group: Group | None = None, module: ModuleType | None = None) -> argparse.ArgumentParser:
    """The parser with every group listed; only ``group`` gets its own arguments (``module``)."""
    parser = argparse.ArgumentParser(
        prog="tmeter",
        description="Transactive smart meters: firmware, gateway, market and simulator.",
    )
    parser.add_argument("--version", action="version", version=f"tmeter {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for g in COMMANDS:
        cmd = sub.add_parser(g.name, help=g.help, description=g.help)
        if g is group and module is not None:
            module.add_arguments(cmd)
            cmd.set_defaults(_run=module.run)
            _describe(cmd)
    return parser


def _describe(parser: argparse.ArgumentParser) -> None:
    """An action's one-line help is also the description its own ``-h`` prints."""
    for action in parser._actions:  # noqa: SLF001 - argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            helps = {choice.dest: choice.help for choice in action._choices_actions}  # noqa: SLF001
            for name, sub in action.choices.items():
                sub.description = sub.description or helps.get(name)
                _describe(sub)


def selected_group(argv: list[str]) -> Group | None:
    """The group the command line names (its first word that is not an option)."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return next((g for g in COMMANDS if g.name == word), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    group = selected_group(argv)
    module = None
    if group is not None:
        module, reason = load(group)
        if reason is not None:  # even for --help: the one line is the answer
            print(f"tmeter {group.name}: {reason}", file=sys.stderr)
            return 2
    parser = build_parser(group, module)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not _is_config_error(exc):
            raise
        for line in str(exc).splitlines():  # one line per mistake, each naming file and key
            print(f"tmeter: {line}", file=sys.stderr)
        return 2


def _is_config_error(exc: Exception) -> bool:
    """A bad gateway.toml (gateway/config.py's ConfigError), whichever command read it. Looked up
    rather than imported: a ConfigError exists only once a command has imported the schema, and
    the other commands need not load it."""
    config = sys.modules.get("gateway.config")
    return config is not None and isinstance(exc, config.ConfigError)


if __name__ == "__main__":
    sys.exit(main())
