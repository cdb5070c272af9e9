# The device configuration at boot: config.json, read as protocols/devconfig.py defines it (the
# schema `tmeter provision` writes), and the register-plan file beside it. Boot-only:
# firmware/main.py unloads this module and protocols.devconfig again.
import json

from protocols import devconfig


def load(path):
    with open(path) as f:
        return devconfig.parse(f.read())


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
