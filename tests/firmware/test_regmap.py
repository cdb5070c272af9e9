"""Register plans (firmware/regmap.py, read back by firmware/config.py) and the values the
firmware's devices decode from them with protocols/regcore.py, checked against the full maps
of protocols/registers.py on random register contents."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from firmware import config, devices, regmap
from protocols import registers
from protocols.errors import ProtocolError

CONFIGS = [
    {"meter_model": "sdm630", "battery_unit": 2},
    {"meter_model": "sdm120", "battery_unit": 2, "battery_map": "battery_lowfirst"},
    {"meter_model": "sdm630", "battery_unit": None},
]


def _maps(mb: dict) -> list[tuple[registers.RegisterMap, tuple[str, ...]]]:
    out = [(registers.by_name(mb["meter_model"]), regmap.METER_VALUES)]
    if mb.get("battery_unit") is not None:
        out.append((registers.by_name(mb.get("battery_map", "battery")), regmap.BATTERY_VALUES))
    return out


@pytest.mark.parametrize("mb", CONFIGS, ids=lambda mb: config.plan_key(mb))
def test_devices_decode_what_the_maps_decode(mb: dict, tmp_path: Path) -> None:
    path = tmp_path / "regplan.json"
    path.write_text(json.dumps(regmap.export(mb)))
    plans = config.load_plans(str(path), mb)
    assert plans is not None and (plans[1] is None) == (mb.get("battery_unit") is None)
    rng = random.Random(5)
    for plan, (rmap, names) in zip(plans, _maps(mb)):
        device = devices._Device(None, 1, plan)
        for name in names:
            assert device.address(name) == rmap.find(name)[1][registers.ADDRESS]
        for _ in range(200):
            got = [[rng.getrandbits(16) for _ in range(block[2])] for block in device.blocks]
            for name in names:
                i = device.fields[name][0]
                block = tuple(device.blocks[i])
                for scale in (1, 1000):
                    want = outcome(lambda: rmap.scaled(name, block, got[i], scale))
                    assert outcome(lambda: device.value(got, name, scale)) == want, name


def outcome(fn):  # noqa: ANN001, ANN201
    try:
        return fn()
    except ProtocolError as e:
        return e.code


def test_a_plan_file_for_another_config_or_format_is_not_used(tmp_path: Path) -> None:
    mb = CONFIGS[0]
    path = tmp_path / "regplan.json"
    path.write_text(json.dumps(regmap.export(CONFIGS[1])))
    assert config.load_plans(str(path), mb) is None
    old = {"key": config.plan_key(mb), "meter": {"blocks": [[4, 52, 24]], "low_first": False,
                                                 "fields": {}}, "battery": None}
    path.write_text(json.dumps(old))
    assert config.load_plans(str(path), mb) is None
    path.write_text("{not json")
    assert config.load_plans(str(path), mb) is None
    assert config.load_plans(str(tmp_path / "missing.json"), mb) is None
