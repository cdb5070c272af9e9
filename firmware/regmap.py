# Register access for the firmware, planned from the maps in protocols/registers.py at boot.
#
# The firmware needs a handful of registers per device, but the full map module (tables of
# every quantity of every model) costs about 30 KB of a 128 KB unix-port heap, and any function
# kept from it keeps all of it alive. So build() imports it, looks up and block-plans each
# device's values with the shared maps, keeps small (block, offset, type) tuples, and unloads
# the module again. Values are then decoded here with integer-only arithmetic (firmware/f32.py
# for float32), checked against protocols/registers.py by tests/firmware/test_units.py.
import sys

from firmware import f32

METER_VALUES = ("import_energy", "export_energy", "total_power")
BATTERY_VALUES = ("soc", "max_charge_power", "max_discharge_power", "capacity", "soc_min",
                  "soc_max", "power", "charged_energy", "discharged_energy", "mode", "setpoint")


class Reader:
    """One device's values: ``blocks`` [(function, start, count)] to read, and per value its
    block index, offset, type ("f32", "u16", "s16", "u32", "s32") and address."""

    def __init__(self, registers=None, regmap=None, names=(), saved=None):
        if saved is not None:
            # From a plan file (see plan()): blocks, word order and fields as exported.
            self.blocks = [tuple(b) for b in saved["blocks"]]
            self.low_first = saved["low_first"]
            self.fields = {}
            for name in saved["fields"]:
                self.fields[name] = tuple(saved["fields"][name])
            return
        self.blocks = regmap.plan(names)
        self.low_first = regmap.word_order == registers.LOW_FIRST
        self.fields = {}
        for name in names:
            function, entry = regmap.find(name)
            addr = entry[registers.ADDRESS]
            dtype = entry[registers.TYPE]
            n = registers.width(dtype)
            for i in range(len(self.blocks)):
                b_fc, b_start, b_count = self.blocks[i]
                if b_fc == function and b_start <= addr and addr + n <= b_start + b_count:
                    self.fields[name] = (i, addr - b_start, dtype, addr)
                    break
            else:
                raise ValueError("register not planned: " + name)

    def value(self, results, name, scale=1):
        """Integer round(value * scale) of ``name`` from the block reads ``results`` (one list
        of registers per block, in block order). Raises ValueError for NaN/infinity."""
        i, off, dtype, _a = self.fields[name]
        regs = results[i]
        if dtype[1:] == "16":
            v = regs[off]
            if dtype == "s16" and v & 0x8000:
                v -= 0x10000
            return v * scale
        hi, lo = (regs[off + 1], regs[off]) if self.low_first else (regs[off], regs[off + 1])
        bits = (hi << 16) | lo
        if dtype == "f32":
            return f32.scaled(bits, scale)
        if dtype == "s32" and bits & 0x80000000:
            bits -= 0x100000000
        return bits * scale

    def address(self, name):
        return self.fields[name][3]

    def encode32(self, name, value):
        """The two registers of a 32-bit integer ``value``, in the device's word order."""
        bits = value & 0xFFFFFFFF
        words = [bits >> 16, bits & 0xFFFF]
        return [words[1], words[0]] if self.low_first else words


def plan_key(mb):
    return str(mb["meter_model"]) + "/" + (str(mb.get("battery_map", "battery"))
                                            if mb.get("battery_unit") is not None else "-")


def export(mb):
    """The plan file (regplan.json) for a device config: the readers of build() as data, so a
    board can skip loading the maps at boot. Made on the host by `tmeter fw deploy/run`."""
    meter, battery = build(mb)
    out = {"key": plan_key(mb)}
    for name, r in (("meter", meter), ("battery", battery)):
        out[name] = None if r is None else {"blocks": r.blocks, "low_first": r.low_first,
                                            "fields": r.fields}
    return out


def load(mb, plan):
    """Readers from a plan file made for this config, or None if it was made for another."""
    if not plan or plan.get("key") != plan_key(mb):
        return None
    b = plan.get("battery")
    return Reader(saved=plan["meter"]), (Reader(saved=b) if b else None)


def build(mb):
    """Readers for the configured meter and battery (None without one); see above."""
    from protocols import registers
    meter = Reader(registers, registers.by_name(mb["meter_model"]), METER_VALUES)
    battery = None
    if mb.get("battery_unit") is not None:
        battery = Reader(registers, registers.by_name(mb.get("battery_map", "battery")),
                         BATTERY_VALUES)
    # Unload: with no reference left the module's tables and code are garbage.
    sys.modules.pop("protocols.registers", None)
    import protocols
    if hasattr(protocols, "registers"):
        delattr(protocols, "registers")
    return meter, battery
