# The household's Modbus devices, read through the register maps of protocols/registers.py
# (via firmware/regmap.py): the electricity meter (Eastron SDM630/SDM120) and the battery
# inverter.
#
# Values become integers at once (float32 kWh -> integer Wh on the IEEE-754 bits), so no float
# ever reaches accounting. A failed read raises ModbusError: there is no cached value to
# return by mistake.
from firmware.modbus_master import ModbusError
from protocols import messages

# tmeter battery map v1 (protocols/registers.py, BATTERY_MODE_*).
MODE_SETPOINT = 0
MODE_SELF_CONSUMPTION = 1


class _Device:
    def __init__(self, master, unit, reader):
        self.master = master
        self.unit = unit
        self.regs = reader      # a firmware.regmap.Reader

    async def _read_blocks(self):
        out = []
        for fc, start, count in self.regs.blocks:
            out.append(await self.master.read(self.unit, fc, start, count))
        return out


class Meter(_Device):

    async def read(self):
        """(import Wh, export Wh, power W, + import) from one set of block reads."""
        got = await self._read_blocks()
        v = self.regs.value
        try:
            imp = v(got, "import_energy", 1000)
            exp = v(got, "export_energy", 1000)
            power = v(got, "total_power")
        except ValueError:  # NaN or infinity: the meter is broken, not the household
            raise ModbusError("frame")
        cap = messages.MAX_COUNTER_WH
        if imp < 0 or exp < 0 or imp > cap or exp > cap:
            # Not a counter value: a failed read, never energy.
            raise ModbusError("frame")
        return imp, exp, power


class Battery(_Device):
    """The battery inverter (tmeter map v1). Power sign: + discharges, - charges."""

    state = None

    async def read(self):
        got = await self._read_blocks()
        v = self.regs.value
        self.state = {
            "soc_pct": v(got, "soc") // 100,
            "max_charge_w": v(got, "max_charge_power"),
            "max_discharge_w": v(got, "max_discharge_power"),
            "capacity_wh": v(got, "capacity"),
            "min_soc_pct": v(got, "soc_min") // 100,
            "max_soc_pct": v(got, "soc_max") // 100,
            "power_w": v(got, "power"),
            "charged_wh": v(got, "charged_energy"),
            "discharged_wh": v(got, "discharged_energy"),
            "mode": v(got, "mode"),
        }
        return self.state

    def clamp(self, watts):
        """``watts`` within the inverter's own limits (read from it, not configured)."""
        s = self.state
        if s is None:
            return 0
        if watts > s["max_discharge_w"]:
            watts = s["max_discharge_w"]
        if watts < -s["max_charge_w"]:
            watts = -s["max_charge_w"]
        if watts > 0 and s["soc_pct"] <= s["min_soc_pct"]:
            watts = 0
        if watts < 0 and s["soc_pct"] >= s["max_soc_pct"]:
            watts = 0
        return watts

    async def set_power(self, watts):
        """Follow a setpoint: the 32-bit setpoint with fc 16, then the mode with fc 06."""
        watts = self.clamp(watts)
        r = self.regs
        await self.master.write_multiple(self.unit, r.address("setpoint"), r.encode32("setpoint", watts))
        if self.state is None or self.state["mode"] != MODE_SETPOINT:
            await self.master.write_single(self.unit, r.address("mode"), MODE_SETPOINT)
            if self.state is not None:
                self.state["mode"] = MODE_SETPOINT
        return watts

    async def self_consumption(self):
        """The safe fallback without an award: the inverter keeps grid exchange at zero."""
        await self.master.write_single(self.unit, self.regs.address("mode"), MODE_SELF_CONSUMPTION)
        if self.state is not None:
            self.state["mode"] = MODE_SELF_CONSUMPTION
