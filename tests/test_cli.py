"""The `tmeter` entry point: help lists every command group, version prints, and a group whose
extra is not installed (or that cannot load) answers in one line."""

import subprocess
import sys

import pytest

from tmeter import cli
from tmeter.cli import COMMANDS


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tmeter", *args], capture_output=True, text=True, timeout=60
    )


def test_help_lists_every_command_group() -> None:
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    for group in COMMANDS:
        assert f"    {group.name}" in result.stdout


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("tmeter ")


def test_unknown_command_is_a_usage_error() -> None:
    result = run_cli("no-such-command")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


# Requirements as the installed metadata lists them: an extra that needs another (``tmeter[...]``),
# an installed distribution (pytest runs this), a missing one, and an extra nobody asked for.
REQUIRES = [
    "pytest>=8; extra == 'ghost'",
    'tmeter[phantom]; extra == "ghost"',
    'no-such-distribution-xyz>=1; extra == "phantom"',
    'also-missing-xyz; extra == "other"',
]


def only_group(monkeypatch: pytest.MonkeyPatch, group: cli.Group, requires: list[str]) -> None:
    monkeypatch.setattr(cli.metadata, "requires", lambda dist: requires)
    monkeypatch.setattr(cli, "COMMANDS", [group])


def test_a_missing_extra_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    ghost = cli.Group("ghost", "tmeter.commands.clear", "a group", ("ghost",))
    only_group(monkeypatch, ghost, REQUIRES)
    assert cli.missing_for(("ghost",)) == ["no-such-distribution-xyz"]
    assert cli.main(["ghost", "--help"]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == ("tmeter ghost: needs the extra ghost (missing no-such-distribution-xyz):"
                       " pip install 'tmeter[ghost]'\n")


def test_a_group_that_cannot_load_is_one_line_too(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    broken = cli.Group("broken", "tmeter.commands.no_such_module", "a group", ("ghost",))
    only_group(monkeypatch, broken, REQUIRES[:1])
    assert cli.main(["broken"]) == 2
    assert capsys.readouterr().err == ("tmeter broken: cannot load: No module named"
                                       " 'tmeter.commands.no_such_module';"
                                       " pip install 'tmeter[ghost]'\n")
