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
        cfg = devconfig.parse(f.read())
    if base is None:
        base = path[:-len("config.json")]
    elif base:
        base += "/"
    # Only what firmware/remote.py wrote after checking it (renamed into place whole); anything
    # unreadable is ignored: the meter boots on config.json.
    saved = _saved(base + "remote.json").get("set") or {}
    for name in saved:
        section, _, key = name.rpartition(".")
        (cfg[section] if section else cfg)[key] = saved[name]
    saved = _saved(base + "rotate.json")
    if saved:
        cfg["kid"] = saved["kid"]
        cfg["key_bytes"] = unhexlify(saved["key"])
    return cfg


def _saved(path):
    try:
        with open(path) as f:
            saved = json.load(f)
        if type(saved) is dict:
            return saved
    except (OSError, ValueError):
        pass
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
