# The household's Modbus devices, read through register plans (firmware/regmap.py, made from
# the maps of protocols/registers.py): the electricity meter (Eastron SDM630/SDM120) and the
# battery inverter.
#
# Values become integers at once (float32 kWh -> integer Wh on the IEEE-754 bits, by
# protocols.regcore), so no float ever reaches accounting. A failed read raises ModbusError:
# there is no cached value to return by mistake.
from firmware.modbus_master import ModbusError
from protocols import const, meterlink, regcore
from protocols.errors import ProtocolError

# Battery state keys, the registers they come from, and the divisor (0.01 % -> %).
_BATTERY_STATE = const((
    ("soc_pct", "soc", 100), ("max_charge_w", "max_charge_power", 1),
    ("max_discharge_w", "max_discharge_power", 1), ("capacity_wh", "capacity", 1),
    ("min_soc_pct", "soc_min", 100), ("max_soc_pct", "soc_max", 100), ("power_w", "power", 1),
    ("charged_wh", "charged_energy", 1), ("discharged_wh", "discharged_energy", 1),
    ("mode", "mode", 1),
))
_S32_MAX = const(0x7FFFFFFF)


class _Device:
    def __init__(self, master, unit, plan):
        self.master = master
        self.unit = unit
        self.blocks, self.word_order, self.fields = plan
        self._got = [None] * len(self.blocks)  # the last block reads, reused

    async def _read_blocks(self):
        got = self._got
        for i in range(len(self.blocks)):
            fc, start, count = self.blocks[i]
            got[i] = await self.master.read(self.unit, fc, start, count)
        return got

    def value(self, got, name, scale=1):
        """Integer round(value * scale) of register ``name`` from the block reads ``got``."""
        i, offset, dtype, _address = self.fields[name]
        return regcore.value_at(got[i], offset, dtype, self.word_order, scale)

    def address(self, name):
        return self.fields[name][3]


class Meter(_Device):

    async def read(self):
        """(import Wh, export Wh, power W, + import) from one set of block reads."""
        got = await self._read_blocks()
        try:
            imp = self.value(got, "import_energy", 1000)
            exp = self.value(got, "export_energy", 1000)
            power = self.value(got, "total_power")
        except ProtocolError:  # NaN or infinity: the meter is broken, not the household
            raise ModbusError("frame")
        cap = meterlink.MAX_COUNTER_WH
        if imp < 0 or exp < 0 or imp > cap or exp > cap:
            # Not a counter value: a failed read, never energy.
            raise ModbusError("frame")
        return imp, exp, power


class Battery(_Device):
    """The battery inverter (tmeter map v1). Power sign: + discharges, - charges."""

    state = None

    async def read(self):
        """The inverter's state and limits, as a dict kept and updated in place."""
        got = await self._read_blocks()
        s = self.state if self.state is not None else {}
        for key, name, div in _BATTERY_STATE:
            s[key] = self.value(got, name) // div
        self.state = s
        return s

    async def set_power(self, watts, step=0):
        """Hold the household's grid exchange at ``watts`` (+ export; the inverter's grid-target
        mode), moving the battery only in the direction of ``step`` (< 0 charging, > 0
        discharging, 0 either) within the inverter's own limits (read from it, not configured).
        The target and its two limits are adjacent in the map: one write (fc 16), then the mode
        (fc 06) if it changes."""
        s = self.state
        watts = max(-_S32_MAX, min(_S32_MAX, watts))  # the 32-bit register's range
        _i, _offset, dtype, address = self.fields["grid_setpoint"]
        words = regcore.ordered(regcore.int_to_words(watts, dtype), self.word_order)
        for w in (0 if step > 0 else s["max_charge_w"], 0 if step < 0 else s["max_discharge_w"]):
            words += regcore.ordered(regcore.int_to_words(w, regcore.U32), self.word_order)
        await self.master.write_multiple(self.unit, address, words)
        if s["mode"] != regcore.BATTERY_MODE_GRID_TARGET:
            await self._set_mode(regcore.BATTERY_MODE_GRID_TARGET)
        return watts

    async def self_consumption(self):
        """The safe fallback without an award: the inverter keeps grid exchange at zero."""
        await self._set_mode(regcore.BATTERY_MODE_SELF_CONSUMPTION)

    async def _set_mode(self, mode):
        await self.master.write_single(self.unit, self.address("mode"), mode)
        if self.state is not None:
            self.state["mode"] = mode
