# Register plans for the firmware, made from the maps in protocols/registers.py: boot-only.
#
# The firmware needs a handful of registers per device, but the full map module (tables of
# every quantity of every model) costs about 25 KB of a 128 KB unix-port heap. So the host
# tools compute each device's plan (`export`, written to regplan.json beside the config, which
# firmware.config.load_plans reads), and a board without that file plans once at boot
# (`build`); firmware.main then unloads this module and the maps. A plan is plain data (JSON
# gives lists where build() gives tuples), so nothing of either stays referenced after boot:
#
#     (blocks, word_order, fields)
#     blocks      [(function, start, count)], the block reads, in order
#     word_order  protocols.regcore.HIGH_FIRST or LOW_FIRST
#     fields      {name: (block index, offset in the block, type, address)}
#
# firmware/devices.py decodes values from it with protocols.regcore.value_at.
from protocols import regcore

METER_VALUES = ("import_energy", "export_energy", "total_power")
BATTERY_VALUES = ("soc", "max_charge_power", "max_discharge_power", "capacity", "soc_min",
                  "soc_max", "power", "charged_energy", "discharged_energy", "mode",
                  "grid_setpoint")


def _plan(registers, regmap, names):
    blocks = regmap.plan(names)
    fields = {}
    for name in names:
        function, entry = regmap.find(name)
        addr = entry[registers.ADDRESS]
        dtype = entry[registers.TYPE]
        n = regcore.width(dtype)
        for i in range(len(blocks)):
            b_fc, b_start, b_count = blocks[i]
            if b_fc == function and b_start <= addr and addr + n <= b_start + b_count:
                fields[name] = (i, addr - b_start, dtype, addr)
                break
        else:
            raise ValueError("register not planned: " + name)
    return blocks, regmap.word_order, fields


def export(mb):
    """The plan file (regplan.json) for a device config: the plans of build() as data, so a
    board can skip loading the maps at boot (firmware.config.load_plans reads it). Made on the
    host by `tmeter fw deploy/run`."""
    from firmware import config
    meter, battery = build(mb)
    return {"key": config.plan_key(mb), "meter": list(meter),
            "battery": None if battery is None else list(battery)}


def build(mb):
    """(meter plan, battery plan or None) for the configured devices, from the maps (which
    firmware.main unloads again after boot)."""
    from protocols import registers
    meter = _plan(registers, registers.by_name(mb["meter_model"]), METER_VALUES)
    battery = None
    if mb.get("battery_unit") is not None:
        battery = _plan(registers, registers.by_name(mb.get("battery_map", "battery")),
                        BATTERY_VALUES)
    return meter, battery
