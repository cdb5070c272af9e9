"""The contracts every runtime shares, each defined once in protocols/ and read the same way by
every side, in CPython and under the MicroPython unix port:

- the device config (protocols/devconfig.py): what `tmeter provision` writes is what the
  firmware reads, defaults included (the gateway's battery_unit was 2, the firmware's None);
- the simulated clock (protocols/simclock.py): one triple, one time, on the firmware, the
  simulator and the gateway (the gateway ignored ``speed`` when ``start`` was unset);
- the tag trailer (protocols/trailer.py): the meter's outbox keeps exactly the records the
  gateway's decoder accepts (the outbox took upper-case tags and any key id).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest

from firmware import config as fw_config
from firmware import hal_unix
from firmware.outbox import Outbox
from gateway.clock import Clock
from gateway.config import ClockConfig
from gateway.registry import Registry, RegistryError
from protocols import devconfig, messages, meterlink, trailer
from protocols.errors import ProtocolError
from sim_hardware.simulator.clock import SimClock
from tmeter.commands import provision as provision_cmd

# -- device config -------------------------------------------------------------------------

# What a meter needs from provisioning: its identity, key and interval (the keys without a
# default), and the broker credentials the registry issues it. Everything else comes from the
# schema's defaults, on whichever side writes or reads the file.
REQUIRED = ("meter", "community", "kid", "key", "interval_s")


def provisioned_and_minimal(tmp_path: Path) -> tuple[Path, Path]:
    reg = Registry(tmp_path / "g.db")
    try:
        device = reg.provision("m01", "c1")
    finally:
        reg.close()
    provisioned = device.write(tmp_path / "provisioned.json")
    doc = json.loads(provisioned.read_text())
    minimal = {k: doc[k] for k in REQUIRED}
    minimal["mqtt"] = {"user": doc["mqtt"]["user"], "password": doc["mqtt"]["password"]}
    (tmp_path / "minimal.json").write_text(json.dumps(minimal))
    return provisioned, tmp_path / "minimal.json"


def test_a_provisioned_config_is_the_minimal_config_with_the_firmwares_defaults(tmp_path: Path) -> None:
    provisioned, minimal = provisioned_and_minimal(tmp_path)
    assert fw_config.load(str(provisioned)) == fw_config.load(str(minimal))


def test_no_battery_unless_provisioned_with_one(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "g.db")
    try:
        plain = reg.provision("m01", "c1")
        with_battery = reg.provision("m02", "c1", modbus={"battery_unit": 2})
    finally:
        reg.close()
    assert fw_config.load(str(plain.write(tmp_path / "m01.json")))["modbus"]["battery_unit"] is None
    assert fw_config.load(str(with_battery.write(tmp_path / "m02.json")))["modbus"]["battery_unit"] == 2


def test_the_cli_writes_the_schemas_defaults(tmp_path: Path) -> None:
    """`tmeter provision` without options writes what Registry.provision writes without overrides."""
    args = ["m01", "--db", str(tmp_path / "g.db"), "--out", str(tmp_path / "cli.json")]
    parser = argparse.ArgumentParser()
    provision_cmd.add_arguments(parser)
    assert provision_cmd.run(parser.parse_args(args)) == 0
    doc = json.loads((tmp_path / "cli.json").read_text())
    minimal = {k: doc[k] for k in REQUIRED}
    minimal["mqtt"] = {"user": doc["mqtt"]["user"], "password": doc["mqtt"]["password"]}
    want = devconfig.parse(json.dumps(minimal))
    del want["key_bytes"]
    assert doc == want
    parser = argparse.ArgumentParser()
    provision_cmd.add_arguments(parser)
    args += ["--rotate", "--battery-unit", "3", "--clock-speed", "60"]  # m01 exists: a new key, same login
    assert provision_cmd.run(parser.parse_args(args)) == 0
    doc = json.loads((tmp_path / "cli.json").read_text())
    assert doc["modbus"]["battery_unit"] == 3 and doc["clock"]["speed"] == 60


def test_the_registry_writes_only_what_the_firmware_accepts(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "g.db")
    try:
        with pytest.raises(RegistryError, match="modbus.batery_unit"):
            reg.provision("m01", "c1", modbus={"batery_unit": 2})  # a typo is an error
        with pytest.raises(RegistryError, match="interval_s"):
            reg.provision("m01", "c1", interval_s=60, gate_closure_s=60)
        assert reg.meters() == []  # nothing registered for a config the firmware would refuse
        device = reg.provision("m01", "c1", clock={"speed": None}, poll_s=5)
        assert device.clock.speed == 1 and device.poll_s == 5 and device.mqtt.user == "m01"
    finally:
        reg.close()


def test_parse_fills_in_defaults_and_refuses_what_cannot_work() -> None:
    base = {"meter": "m01", "community": "c1", "kid": 1, "key": "ab" * 32, "interval_s": 900}
    cfg = devconfig.parse(json.dumps({**base, "mqtt": {"port": 1884, "retry_s": None}, "extra": 1}))
    assert cfg["mqtt"]["port"] == 1884 and cfg["mqtt"]["retry_s"] == 10 and cfg["extra"] == 1
    assert cfg["key_bytes"] == bytes([0xAB]) * 32 and cfg["modbus"] == devconfig.defaults()["modbus"]
    assert devconfig.defaults() is not devconfig.defaults()  # each caller its own copy
    for broken in ({**base, "kid": None}, {k: v for k, v in base.items() if k != "interval_s"},
                   {**base, "key": "ab" * 16}, {**base, "key": "zz" * 32}, {**base, "gate_closure_s": 900},
                   {**base, "modbus": "uart"}, [base]):
        with pytest.raises(ValueError):
            devconfig.parse(json.dumps(broken))


def _jsonable(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in cfg.items()}


@pytest.mark.micropython
def test_the_firmware_reads_both_configs_alike_under_micropython(tmp_path: Path, micropython) -> None:
    provisioned, minimal = provisioned_and_minimal(tmp_path)
    paths = [str(provisioned), str(minimal)]
    out = micropython(
        "import json\n"
        "from binascii import hexlify\n"
        "from firmware import config\n"
        "def jsonable(cfg):\n"
        "    return {k: (hexlify(v).decode() if type(v) is bytes else v) for k, v in cfg.items()}\n"
        f"print(json.dumps([jsonable(config.load(p)) for p in {paths!r}]))\n")
    got_provisioned, got_minimal = json.loads(out.stdout.strip().splitlines()[-1])
    assert got_provisioned == got_minimal == _jsonable(fw_config.load(str(minimal)))


# -- simulated clock -----------------------------------------------------------------------

MADE = 1_700_000_000  # wall time when each clock is made (the "now" of unset values)
READ = MADE + 100  # wall time when it is read
EPOCH = MADE - 50
START = 1_000_000
# (start, epoch, speed) as a config, a manifest or gateway.toml gives them; None: unset.
TRIPLES = [(START, EPOCH, 60), (START, None, 60), (None, EPOCH, 60), (None, None, 60),
           (None, None, 1), (START, EPOCH, None), (START, EPOCH, 0.5), (None, EPOCH, 1)]


def expected(start: float | None, epoch: float | None, speed: float | None) -> float:
    """The contract: sim = start + (wall - epoch) * speed; an unset epoch is the wall time when
    the clock is made, an unset start the epoch, an unset speed 1."""
    epoch = MADE if epoch is None else epoch
    start = epoch if start is None else start
    return start + (READ - epoch) * (1 if speed is None else speed)


def host_times(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[float]]:
    wall = [MADE]
    monkeypatch.setattr(time, "time", lambda: wall[0])
    monkeypatch.setattr(hal_unix, "_real_ms", lambda: wall[0] * 1000)
    out: dict[str, list[float]] = {"firmware": [], "simulator": [], "gateway": []}
    for start, epoch, speed in TRIPLES:
        triple = {"start": start, "epoch": epoch, "speed": speed}
        wall[0] = MADE
        board = hal_unix.Board({"clock": triple}, ".")
        simulator = SimClock.from_dict(triple)
        gateway = Clock(ClockConfig(**triple))  # type: ignore[arg-type]
        wall[0] = READ
        out["firmware"].append(board.now_ms() / 1000)
        out["simulator"].append(simulator.now())
        out["gateway"].append(gateway.now())
    return out


@pytest.mark.parametrize("side", ["firmware", "simulator", "gateway"])
def test_one_triple_one_time_on_every_side(side: str, monkeypatch: pytest.MonkeyPatch) -> None:
    want = [expected(*triple) for triple in TRIPLES]
    assert host_times(monkeypatch)[side] == want


def test_the_gateway_honours_speed_without_a_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """The former disagreement: a gateway with start unset ran the plain wall clock."""
    wall = [MADE]
    monkeypatch.setattr(time, "time", lambda: wall[0])
    clock = Clock(ClockConfig(start=None, epoch=None, speed=60.0))
    wall[0] = READ
    assert clock.now() == MADE + 100 * 60
    assert clock.real_seconds(600.0) == 10.0


@pytest.mark.micropython
def test_the_firmware_clock_under_micropython(micropython) -> None:
    out = micropython(
        "import json\n"
        "from firmware import hal_unix\n"
        "wall = [0]\n"
        "hal_unix._real_ms = lambda: wall[0]\n"
        "out = []\n"
        f"for start, epoch, speed in {TRIPLES!r}:\n"
        f"    wall[0] = {MADE * 1000}\n"
        "    board = hal_unix.Board({'clock': {'start': start, 'epoch': epoch, 'speed': speed}}, '.')\n"
        f"    wall[0] = {READ * 1000}\n"
        "    out.append(board.now_ms())\n"
        "print(json.dumps(out))\n")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == [int(expected(*triple) * 1000) for triple in TRIPLES]
    assert all(type(ms) is int for ms in got)  # the firmware keeps integer milliseconds


# -- tag trailer ---------------------------------------------------------------------------

KEY = bytes(range(32))
KID = 1
TOPIC = "tm/v1/c1/meters/m01/reading"


def trailer_variants() -> dict[str, bytes]:
    """A queued record as encoded, and the ways flash damage (or a lenient parser) can change
    its trailer or body."""
    msg = meterlink.reading("m01", KID, 1, 7, 1900007, 1710000000, 1710000900, 5, 0, 1007, 0, 0)
    good = meterlink.encode(msg, KEY)
    cut = good.rfind(b"\n")
    body, tag = good[:cut], good[-64:]
    flipped = body.replace(b'"imp_wh":5', b'"imp_wh":6')
    return {
        "as-encoded": good,
        "upper-case-tag": body + b"\n1:" + tag.upper(),
        "kid-leading-zero": body + b"\n01:" + tag,
        "kid-other": body + b"\n2:" + tag,
        "kid-zero": body + b"\n0:" + tag,
        "kid-empty": body + b"\n:" + tag,
        "kid-sign": body + b"\n+1:" + tag,
        "kid-space": body + b"\n 1:" + tag,
        "kid-six-digits": body + b"\n100001:" + tag,
        "tag-short": good[:-1],
        "tag-long": good + b"0",
        "tag-not-hex": good[:-1] + b"g",
        "tag-space": good[:-2] + b" 0",
        "two-colons": body + b"\n1::" + tag[1:],
        "no-trailer": body,
        "newline-after-tag": good + b"\n",
        "cr-before-trailer": body + b"\r\n1:" + tag,
        "body-damaged": flipped + good[cut:],
        "truncated": good[:40],
        "empty": b"",
    }


@pytest.mark.parametrize("kid", [0, 1, 9, 10, 65535])
def test_split_takes_apart_what_encode_made(kid: int) -> None:
    body = b'{"v":1}'
    payload = trailer.encode(body, kid, KEY)
    assert payload == body + b"\n" + str(kid).encode() + b":" + hmac.new(KEY, body, hashlib.sha256).hexdigest().encode()
    assert trailer.split(payload) == (body, kid, hmac.new(KEY, body, hashlib.sha256).digest())
    assert trailer.signed(payload, kid, KEY)
    assert not trailer.signed(payload, kid + 1, KEY) and not trailer.signed(payload, kid, bytes(32))


def gateway_accepts(payload: bytes) -> bool:
    try:
        messages.decode(TOPIC, payload, lambda meter, kid: KEY if (meter, kid) == ("m01", KID) else None)
    except ProtocolError:
        return False
    return True


def outbox_keeps(tmp_path: Path, payloads: list[bytes]) -> list[bool]:
    counters = {"q_drop": 0, "q_bad": 0}
    box = Outbox(hal_unix.Board({}, str(tmp_path)), KID, KEY, len(payloads), counters)
    box.load()
    for seq, payload in enumerate(payloads):
        box.put(seq, 1, payload)
    kept = [box.get(seq) == payload for seq, payload in enumerate(payloads)]
    assert counters["q_bad"] == kept.count(False)  # each dropped record is counted as damage
    return kept


def test_the_outbox_keeps_exactly_what_the_gateway_accepts(tmp_path: Path) -> None:
    variants = trailer_variants()
    accepted = {name: gateway_accepts(p) for name, p in variants.items()}
    assert [name for name, ok in accepted.items() if ok] == ["as-encoded"]
    kept = dict(zip(variants, outbox_keeps(tmp_path, list(variants.values())), strict=True))
    assert kept == accepted


@pytest.mark.micropython
def test_the_outbox_keeps_exactly_what_the_gateway_accepts_under_micropython(
        tmp_path: Path, micropython) -> None:
    variants = trailer_variants()
    payloads = [p.hex() for p in variants.values()]
    (tmp_path / "box").mkdir()
    out = micropython(
        "import json\n"
        "from binascii import unhexlify\n"
        "from firmware.hal_unix import Board\n"
        "from firmware.outbox import Outbox\n"
        f"payloads = [unhexlify(p) for p in {payloads!r}]\n"
        "counters = {'q_drop': 0, 'q_bad': 0}\n"
        f"box = Outbox(Board({{}}, {str(tmp_path / 'box')!r}), {KID}, {KEY!r}, len(payloads), counters)\n"
        "box.load()\n"
        "for seq in range(len(payloads)):\n"
        "    box.put(seq, 1, payloads[seq])\n"
        "print(json.dumps([box.get(seq) == payloads[seq] for seq in range(len(payloads))]))\n")
    kept = dict(zip(variants, json.loads(out.stdout.strip().splitlines()[-1]), strict=True))
    assert kept == {name: gateway_accepts(p) for name, p in variants.items()}
