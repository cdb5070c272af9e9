"""A bad gateway configuration is refused before anything is created: every command that reads
gateway.toml answers a mistake with one line naming the file, the key and what is allowed, exit
code 2, and leaves the config's folder as it was (no database, no ledger key). The same schema
checks configs built in code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from gateway import config
from gateway.config import ConfigError, GatewayConfig, MarketConfig, MqttConfig
from gateway.market import ALLOCATIONS, MECHANISMS
from tmeter import cli

ROOT = Path(__file__).parents[2]
BASE = """community = "c1"
db = "gateway.db"
[mqtt]
host = "127.0.0.1"
port = 1
user = "gateway"
password = "pw"
[status]
http_port = 0
"""

# (what the file holds, the key the one line must name, a piece of what is allowed).
# The port of BASE is 1: a config that wrongly passes finds no broker and fails on its own.
CASES: dict[str, tuple[str, str, str]] = {
    "unknown key": (BASE.replace('host = "127.0.0.1"', 'hots = "127.0.0.1"'), "mqtt.hots",
                    "unknown key"),
    "interval not an integer": ('interval_s = "abc"\n' + BASE, "interval_s", 'a positive integer, got "abc"'),
    "port as a string": (BASE.replace("port = 1", 'port = "1883"'), "mqtt.port",
                         'expected an integer 1..65535, got "1883"'),
    "community not an id": (BASE.replace('"c1"', '"c 1!"'), "community", 'got "c 1!"'),
    "allocation unknown": (BASE + '[market]\nallocation = "prop"\n', "market.allocation", "proportional"),
    "mechanism unknown": (BASE + '[market]\nmechanism = "auction"\n', "market.mechanism", '"p2p"'),
    "gate closure after the interval": ("interval_s = 60\ngate_closure_s = 60\n" + BASE, "gate_closure_s",
                                        "below interval_s (60)"),
    "synchronous unknown": ('synchronous = "fast"\n' + BASE, "synchronous", '"NORMAL"'),
    "loss tolerance above one": (BASE + "[settlement]\nloss_tolerance = 1.5\n", "settlement.loss_tolerance",
                                 "0..1"),
    "feeder not an id": (BASE + '[settlement]\nfeeder_meter = "a/b"\n', "settlement.feeder_meter", "id"),
    "clock speed zero": (BASE + "[clock]\nspeed = 0\n", "clock.speed", "above 0"),
    "clock speed infinite": (BASE + "[clock]\nspeed = inf\n", "clock.speed", "got inf"),
    "queue empty": (BASE + "[ingest]\nper_meter_queue = 0\n", "ingest.per_meter_queue", "positive"),
    "ack qos two": (BASE + "[ingest]\nack_qos = 2\n", "ingest.ack_qos", "0 or 1"),
    "ack qos true": (BASE + "[ingest]\nack_qos = true\n", "ingest.ack_qos", "0 or 1, got true"),
    "user not a name": (BASE.replace('"gateway"', '"gw:x"'), "mqtt.user", 'got "gw:x"'),
    "export above import price": (BASE + "[market]\nexport_price = 400000\n", "market.export_price",
                                  "at most market.import_price (300000)"),
    "a section as a value": ('db = "gateway.db"\nmqtt = 3\n', "mqtt", "a table [mqtt], got 3"),
    "tls as a string": (BASE.replace("port = 1\n", 'port = 1\ntls = "yes"\n'), "mqtt.tls", "true or false"),
    "origin with a space": (BASE + '[ledger]\norigin = "my log"\n', "ledger.origin", "no space"),
}


def write(folder: Path, text: str) -> Path:
    path = folder / "gateway.toml"
    path.write_text(text)
    return path


def commands(path: Path) -> list[list[str]]:
    """Every command that reads a gateway.toml, each writing into the config's folder if it
    got that far."""
    out = str(path.parent)
    return [["gateway", "mosquitto-config", "--config", str(path), "--out", out],
            ["provision", "m01", "--config", str(path), "--out", str(path.parent / "m01.json")],
            ["ledger", "verify", "--config", str(path)],
            ["ledger", "export-checkpoint", "--config", str(path), "--out", str(path.parent / "cp")]]


def assert_one_line(err: str, path: Path | str, key: str, allowed: str) -> None:
    assert "Traceback" not in err, err
    assert err.count("\n") == 1, err
    assert err.startswith(f"tmeter: {path}: {key}: "), err
    assert allowed in err, err


def folder_of(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


@pytest.mark.parametrize("case", sorted(CASES))
def test_gateway_run_refuses_a_bad_config_in_one_line(tmp_path: Path, case: str) -> None:
    text, key, allowed = CASES[case]
    path = write(tmp_path, text)
    # The real entry point as systemd starts it; a timeout means the daemon started.
    result = subprocess.run([sys.executable, "-m", "tmeter", "gateway", "run", "--config", str(path)],
                            capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert_one_line(result.stderr, path, key, allowed)
    assert folder_of(path) == ["gateway.toml"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_command_refuses_a_bad_config_before_creating_anything(
        tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]) -> None:
    text, key, allowed = CASES[case]
    path = write(tmp_path, text)
    for argv in commands(path):
        assert cli.main(argv) == 2, argv
        out = capsys.readouterr()
        assert_one_line(out.err, path, key, allowed)
        assert folder_of(path) == ["gateway.toml"], argv


@pytest.mark.parametrize("problem", ["missing", "directory", "bad toml", "not utf-8"])
def test_an_unreadable_config_file_is_one_line(tmp_path: Path, problem: str,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gateway.toml"
    if problem == "directory":
        path.mkdir()
    elif problem == "bad toml":
        path.write_text(BASE + "[mqtt\n")
    elif problem == "not utf-8":
        path.write_bytes(b'community = "c\xff1"\n')
    expected = {"missing": "no such file", "directory": "a directory", "bad toml": "line 10",
                "not utf-8": "not UTF-8"}[problem]
    before = folder_of(path)
    for argv in [["gateway", "run", "--config", str(path)], *commands(path)]:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "Traceback" not in err and err.count("\n") == 1, err
        assert err.startswith(f"tmeter: {path}: ") and expected in err, err
        assert folder_of(path) == before, argv


def test_the_message_names_file_key_and_what_is_allowed(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("port = 1", 'port = "1883"'))
    with pytest.raises(ConfigError) as caught:
        config.load(path)
    assert str(caught.value) == f'{path}: mqtt.port: expected an integer 1..65535, got "1883"'


def test_an_unknown_key_lists_the_keys_of_its_table() -> None:
    with pytest.raises(ConfigError) as caught:
        config.from_dict({"mqtt": {"hots": "x"}})
    assert str(caught.value).startswith("mqtt.hots: unknown key; [mqtt] has host, port, user,")


def test_enumerations_are_the_ones_the_market_implements() -> None:
    # The allowed values are read from gateway.market, not restated: a new rule there is
    # accepted here, a removed one refused.
    assert get_args(MarketConfig.model_fields["mechanism"].annotation) == MECHANISMS
    assert get_args(MarketConfig.model_fields["allocation"].annotation) == ALLOCATIONS
    for allocation in ALLOCATIONS:
        assert config.from_dict({"market": {"allocation": allocation}}).market.allocation == allocation
    with pytest.raises(ConfigError) as caught:
        config.from_dict({"market": {"allocation": "prop"}})
    assert all(f'"{a}"' in str(caught.value) for a in ALLOCATIONS)


def test_configs_built_in_code_are_checked_the_same_way() -> None:
    with pytest.raises(ConfigError, match=r"^interval_s: expected a positive integer, got 0$"):
        GatewayConfig(interval_s=0)
    with pytest.raises(ConfigError, match=r"^port: expected an integer 1..65535, got 0$"):
        MqttConfig(port=0)
    cfg = GatewayConfig(community="c2", db="x.db", mqtt=MqttConfig(port=1884))
    cfg.mqtt.port = 1885  # assignment keeps working ...
    cfg.db = "y.db"
    assert (cfg.mqtt.port, cfg.db, cfg.origin, cfg.key_path) == (1885, "y.db", "tmeter.local/c2",
                                                                 Path("y.db.ledger-key.pem"))
    with pytest.raises(ConfigError, match=r'^port: expected an integer 1..65535, got "1883"$'):
        cfg.mqtt.port = "1883"  # type: ignore[assignment]  # ... and is checked
    with pytest.raises(ConfigError, match=r"^gate_closure_s: "):
        cfg.interval_s = 30  # below the default gate closure of 60
    assert (cfg.mqtt.port, cfg.interval_s) == (1885, 900)  # a refused assignment changes nothing


def test_relative_paths_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    text = BASE.replace('password = "pw"\n', 'password = "pw"\nca = "ca.pem"\n')
    path = write(tmp_path / "etc", text + '[ledger]\nkey_file = "keys/ledger.pem"\n')
    cfg = config.load(path)
    assert cfg.db == str(tmp_path / "etc" / "gateway.db")
    assert cfg.key_path == tmp_path / "etc" / "keys" / "ledger.pem"
    assert cfg.mqtt.ca == str(tmp_path / "etc" / "ca.pem")


def test_the_example_config_documents_every_key() -> None:
    # deploy/gateway.toml is the reference of every key: each is set or shown commented out.
    text = (ROOT / "deploy" / "gateway.toml").read_text()
    assert config.load(ROOT / "deploy" / "gateway.toml") is not None
    section = ""
    documented: set[str] = set()
    for line in text.splitlines():
        if m := re.match(r"\s*\[([\w.]+)\]", line):
            section = m.group(1)
        elif m := re.match(r"\s*#?\s*(\w+)\s*=", line):
            documented.add(f"{section}.{m.group(1)}" if section else m.group(1))

    def keys(model: type[config.BaseModel], prefix: str) -> set[str]:
        # Every key, a nested table's ([market.p2p]) as its dotted name.
        out: set[str] = set()
        for name, field in model.model_fields.items():
            sub = field.annotation
            nested = isinstance(sub, type) and issubclass(sub, config.BaseModel)
            out |= keys(sub, f"{prefix}{name}.") if nested else {prefix + name}
        return out

    schema = keys(GatewayConfig, "")
    assert schema - documented == set()
    assert documented - schema == set()


def test_every_key_says_what_it_allows() -> None:
    # Each error line's "expected ..." is the key's description: none may be missing.
    def leaves(model: type[config.BaseModel], prefix: str) -> list[tuple[str, object]]:
        out: list[tuple[str, object]] = []
        for name, info in model.model_fields.items():
            sub = info.annotation
            if isinstance(sub, type) and issubclass(sub, config.BaseModel):
                out += leaves(sub, f"{prefix}{name}.")
            else:
                out.append((prefix + name, config._allowed(info)))
        return out
    assert [key for key, allowed in leaves(GatewayConfig, "") if not allowed] == []
