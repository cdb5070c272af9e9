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


# --- A bad configuration, whichever command reads it: one line, exit code 2, nothing started.

def test_a_config_error_is_one_line_per_mistake(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    path = tmp_path / "gateway.toml"
    path.write_text('community = "c 1!"\n[mqtt]\nport = 0\n')
    assert cli.main(["gateway", "mosquitto-config", "--config", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"tmeter: {path}: community: expected an id: 1-32 characters of A-Z a-z 0-9 _ - (protocols/topics.py),"
        ' got "c 1!"',
        f"tmeter: {path}: mqtt.port: expected an integer 1..65535, got 0",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.toml"]


def test_fw_run_refuses_a_boards_link(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    import json  # noqa: PLC0415

    path = tmp_path / "m01.json"
    path.write_text(json.dumps({**DEVICE_CONFIG, "modbus": {"link": "uart"}}))  # provision's default
    assert cli.main(["fw", "run", "--config", str(path), "--runtime", "cpython"]) == 2
    out = capsys.readouterr()
    assert out.out == "" and out.err == (f'tmeter: {path}: modbus.link: expected tcp:HOST:PORT or tty:PATH on'
                                         ' this machine, got "uart" (a board\'s link; provision with --modbus-link)\n')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m01.json"]


DEVICE_CONFIG = {"meter": "m01", "community": "c1", "kid": 1, "key": "00" * 32, "interval_s": 900,
                 "modbus": {"link": "tcp:127.0.0.1:1"}}


@pytest.mark.parametrize("problem, expected", [
    ("missing", "no such file"),
    ("directory", "is a directory"),
    ("not json", "not JSON"),
    ("no key", "lacks key"),
    ("short key", "key must be 32 bytes"),
    ("gate closure after the interval", "interval_s must exceed gate_closure_s"),
    ("interval as a string", "wrong type"),
])
def test_fw_run_refuses_a_bad_device_config_before_starting(
        tmp_path, problem: str, expected: str, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    import json  # noqa: PLC0415

    path = tmp_path / "m01.json"
    device = dict(DEVICE_CONFIG)
    if problem == "directory":
        path.mkdir()
    elif problem == "not json":
        path.write_text('{"meter": "m01",')
    elif problem != "missing":
        if problem == "no key":
            del device["key"]
        elif problem == "short key":
            device["key"] = "00" * 16
        elif problem == "interval as a string":
            device["interval_s"] = "900"
        else:
            device["gate_closure_s"] = 900
        path.write_text(json.dumps(device))
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv in (["fw", "run", "--config", str(path), "--runtime", "cpython"],
                 ["fw", "deploy", "--port", "/dev/null", "--config", str(path), "--dry-run",
                  "--build", str(tmp_path / "build")]):
        assert cli.main(argv) == 2, argv
        out = capsys.readouterr()
        assert out.out == "", argv  # the interpreter's (or mpremote's) command line is not printed
        assert out.err.count("\n") == 1 and "Traceback" not in out.err, out.err
        assert out.err.startswith(f"tmeter: {path}: ") and expected in out.err, out.err
        assert sorted(p.name for p in tmp_path.iterdir()) == before, argv  # no regplan.json, no state


def test_every_command_has_a_description_and_every_option_a_help() -> None:
    import argparse

    from tmeter import cli

    missing: list[str] = []

    def walk(parser: argparse.ArgumentParser, path: list[str]) -> None:
        if not parser.description:
            missing.append(f"{' '.join(path)}: no description")
        for action in parser._actions:  # noqa: SLF001
            if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
                for name, sub in action.choices.items():
                    walk(sub, [*path, name])
            elif not isinstance(action, argparse._HelpAction) and not action.help:  # noqa: SLF001
                missing.append(f"{' '.join(path)} {'/'.join(action.option_strings) or action.dest}: no help")

    for group in cli.COMMANDS:
        module, error = cli.load(group)
        assert module is not None, error
        top = cli.build_parser(group, module)
        sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
        walk(sub.choices[group.name], [group.name])
    assert not missing, "\n".join(missing)
