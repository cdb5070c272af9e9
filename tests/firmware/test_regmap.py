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


def test_a_plan_made_before_the_grid_target_is_made_again(tmp_path: Path) -> None:
    mb = CONFIGS[0]
    saved = regmap.export(mb)
    del saved["battery"][2]["grid_setpoint"]
    path = tmp_path / "regplan.json"
    path.write_text(json.dumps(saved))
    assert config.load_plans(str(path), mb) is None


class Recorder:
    """A Modbus master that keeps what it is asked to write (the encoding is what is tested)."""

    def __init__(self) -> None:
        self.writes: list[tuple[int, list[int]]] = []

    async def write_multiple(self, unit: int, address: int, words: list[int]) -> None:
        self.writes.append((address, list(words)))

    async def write_single(self, unit: int, address: int, value: int) -> None:
        self.writes.append((address, [value]))


@pytest.mark.parametrize("mb", CONFIGS[:2], ids=lambda mb: config.plan_key(mb))
@pytest.mark.parametrize("step, limits", [(-5, (3000, 0)), (7, (0, 2500)), (0, (3000, 2500))])
def test_the_grid_target_is_one_write_of_target_and_direction(
        mb: dict, step: int, limits: tuple[int, int]) -> None:
    import asyncio
    rmap = registers.by_name(mb["battery_map"] if "battery_map" in mb else "battery")
    battery = devices.Battery(Recorder(), 2, regmap.build(mb)[1])
    battery.state = {"max_charge_w": 3000, "max_discharge_w": 2500, "mode": 0}
    asyncio.run(battery.set_power(-4200, step))
    (address, words), mode = battery.master.writes
    start = rmap.find("grid_setpoint")[1][registers.ADDRESS]
    assert address == start and len(words) == 6
    block = (registers.READ_HOLDING, start, 6)
    got = [rmap.scaled(name, block, words, 1)
           for name in ("grid_setpoint", "target_charge_max", "target_discharge_max")]
    assert got == [-4200, *limits]
    assert mode == (rmap.find("mode")[1][registers.ADDRESS], [registers.BATTERY_MODE_GRID_TARGET])
