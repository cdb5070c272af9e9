# The device configuration at boot: config.json, read as protocols/devconfig.py defines it (the
# schema `tmeter provision` writes), and the register-plan file beside it. Boot-only:
# firmware/main.py unloads this module and protocols.devconfig again.
import json
from binascii import unhexlify

from protocols import devconfig


def load(path, base=None):
    """The config at ``path`` with what remote commands changed (firmware/remote.py) over it:
    the accepted settings of remote.json and the key of rotate.json in the folder ``base``
    (default: the config's own)."""
    with open(path) as f:
        text = f.read()
    cfg = devconfig.parse(text)
    if base is None:
        base = path[:-len("config.json")]
    elif base:
        base += "/"
    # Only what firmware/remote.py wrote after checking it, renamed into place whole. Inline,
    # not a function: a booted meter has no name to spare (tests/firmware/test_memory.py).
    try:
        saved = _saved(base + "remote.json").get("set") or {}
        for name in saved:
            section, _, key = name.rpartition(".")
            if type(saved[name]) is not int:
                raise ValueError(name)
            (cfg[section] if section else cfg)[key] = saved[name]
        saved = _saved(base + "rotate.json")
        if saved:
            key = unhexlify(saved["key"])
            if len(key) != len(cfg["key_bytes"]) or type(saved["kid"]) is not int:
                raise ValueError("rotate.json")
            cfg["kid"] = saved["kid"]
            cfg["key_bytes"] = key
    except Exception:  # noqa: BLE001 - damaged on flash: all of it ignored, config.json boots
        print("config: remote.json or rotate.json damaged, ignored")
        cfg = devconfig.parse(text)
    return cfg


def _saved(path):
    try:
        with open(path) as f:
            return json.load(f)
    except OSError:  # none: nothing was changed remotely
        return {}


def plan_key(mb):
    """What the register plans of a Modbus config depend on (regplan.json records it)."""
    return str(mb["meter_model"]) + "/" + (str(mb.get("battery_map", "battery"))
                                            if mb.get("battery_unit") is not None else "-")


def load_plans(path, mb):
    """(meter plan, battery plan or None) from the plan file at ``path`` (firmware/regmap.py
    makes it) if it was made for the Modbus config ``mb``; otherwise None."""
    try:
        with open(path) as f:
            saved = json.load(f)
        meter = saved["meter"]
        battery = saved["battery"]
        if saved["key"] != plan_key(mb) or type(meter) is not list or len(meter) != 3:
            return None  # another config's plans, or an older format
        if battery is not None and "grid_setpoint" not in battery[2]:
            return None  # planned before the inverter map gained the grid target
        return meter, battery
    except (OSError, ValueError, KeyError, TypeError):
        return None
