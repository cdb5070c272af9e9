# Register maps as data (Eastron SDM630, SDM120, the tmeter battery inverter), block-read planning,
# and integer conversion of register values.
#
# The firmware plans its block reads through these maps (on the host, or once at boot) and the
# simulator serves the same maps, so the two cannot drift apart. Runs on MicroPython and CPython:
# no typing, no dataclasses, no f-strings. Value types and the integer conversions (no float
# ever enters energy accounting) are in protocols/regcore.py, re-exported here.
#
# Sources:
#  [SDM630] Eastron SDM630-Modbus V2 "Modbus Protocol" (input registers 30001..30381, holding
#           registers 40003..40087, 4FC01 serial number): parameters are IEEE-754 float32 in two
#           registers, high word first; read with 04 (input) and 03 (holding), written with 16;
#           a request is limited to 40 parameters (80 registers).
#  [SDM120] Eastron SDM120-Modbus "Modbus Protocol" (same conventions, single phase).
#  [APP]    MODBUS Application Protocol Specification V1.1b3 (125-register read limit).
from protocols.errors import ProtocolError
from protocols.rtu import MAX_READ, READ_HOLDING, READ_INPUT  # noqa: F401 - part of this API
# Value types, word order, conversions and the battery modes live in regcore, which the firmware
# loads alone; they are part of this module's API too.
from protocols.regcore import (  # noqa: F401
    BATTERY_MODE_GRID_TARGET, BATTERY_MODE_SELF_CONSUMPTION, BATTERY_MODE_SETPOINT, F32,
    HIGH_FIRST, LOW_FIRST, S16, S32, U16, U32, _int_range, float32_bits_to_scaled_int,
    float32_words_to_scaled_int, int_to_words, ordered, value_at, width, word_to_int,
    words_to_int)

# An entry is (name, address, type, unit, access); access is "r", "rw" or "w".
NAME = 0
ADDRESS = 1
TYPE = 2
UNIT = 3
ACCESS = 4


def float_to_words(value):
    """Simulator side: the float32 nearest ``value`` as (high word, low word)."""
    import struct  # only the simulator and tests encode floats; the firmware never calls this

    raw = struct.pack(">f", value)
    return [(raw[0] << 8) | raw[1], (raw[2] << 8) | raw[3]]


def words_to_float(hi, lo):
    """Simulator and test side: the float32 value of a register pair (high word first)."""
    import struct

    return struct.unpack(">f", bytes(((hi >> 8) & 0xFF, hi & 0xFF, (lo >> 8) & 0xFF, lo & 0xFF)))[0]


# ------------------------------------------------------------------------------ register maps


class RegisterMap:
    """One device type's registers.

    ``inputs`` and ``holdings`` are tuples of entries (name, address, type, unit, access).
    ``windows`` per table list the (start, end) address ranges the device answers; undocumented
    addresses inside a window read as 0, anything outside one is answered with exception 02.
    With no windows given, exactly the documented registers are readable. ``functions`` are the
    function codes the device implements; ``max_read`` its per-request register limit.
    """

    def __init__(self, name, inputs, holdings, word_order=HIGH_FIRST, max_read=MAX_READ,
                 functions=(3, 4, 16), input_windows=None, holding_windows=None):
        if word_order != HIGH_FIRST and word_order != LOW_FIRST:
            raise ProtocolError("bad_word_order", str(word_order))
        self.name = name
        self.inputs = inputs
        self.holdings = holdings
        self.word_order = word_order
        self.max_read = max_read
        self.functions = functions
        self.input_windows = input_windows if input_windows is not None else _spans(inputs)
        self.holding_windows = holding_windows if holding_windows is not None else _spans(holdings)

    def with_word_order(self, word_order):
        """The same map for a device that stores 32-bit values in ``word_order``."""
        return RegisterMap(self.name, self.inputs, self.holdings, word_order, self.max_read,
                           self.functions, self.input_windows, self.holding_windows)

    def table(self, function):
        """Entries read by ``function`` (04 input, 03 holding)."""
        if function == READ_INPUT:
            return self.inputs
        if function == READ_HOLDING:
            return self.holdings
        raise ProtocolError("bad_function", str(function))

    def windows(self, function):
        return self.input_windows if function == READ_INPUT else self.holding_windows

    def find(self, name):
        """(read function, entry) of the register called ``name``."""
        for function, entries in ((READ_INPUT, self.inputs), (READ_HOLDING, self.holdings)):
            for entry in entries:
                if entry[NAME] == name:
                    return function, entry
        raise ProtocolError("unknown_register", str(name))

    def readable(self, function, start, count):
        """True when one read of ``count`` registers from ``start`` lies inside a window."""
        end = start + count
        for lo, hi in self.windows(function):
            if lo <= start and end <= hi:
                return True
        return False

    def plan(self, names, max_regs=0):
        """Group the registers ``names`` into the fewest block reads.

        Returns a list of (function, start, count). A block bridges a gap only when the whole
        block lies inside one readable window, and never exceeds ``max_regs`` (default and
        ceiling: the device's ``max_read``). Sorting by address and extending each block as far as
        the limit allows is optimal for this one-dimensional cover (the ESPHome
        modbus_controller approach, plus gap bridging).
        """
        limit = self.max_read if not max_regs else min(max_regs, self.max_read)
        spans = {}
        for name in names:
            function, entry = self.find(name)
            start = entry[ADDRESS]
            spans.setdefault(function, []).append((start, start + width(entry[TYPE])))
        blocks = []
        for function in sorted(spans):
            self._plan_table(function, sorted(spans[function]), limit, blocks)
        return blocks

    def _plan_table(self, function, items, limit, blocks):
        start, end = items[0]
        for lo, hi in items[1:]:
            new_end = end if hi < end else hi
            joinable = lo <= end or self.readable(function, start, new_end - start)
            if joinable and new_end - start <= limit:
                end = new_end
            else:
                blocks.append((function, start, end - start))
                start, end = lo, hi
        blocks.append((function, start, end - start))

    def words_of(self, name, block, registers):
        """The value's registers, high word first, cut out of a block read's result.

        ``block`` is (function, start, count) from plan(); ``registers`` what the read returned.
        """
        entry, offset = self._locate(name, block, registers)
        return entry, ordered(registers[offset:offset + width(entry[TYPE])], self.word_order)

    def scaled(self, name, block, registers, scale=1, max_abs=0):
        """The register ``name`` as the integer round(value * scale), without floats.

        E.g. scaled("import_energy", block, regs, 1000) gives Wh from an Eastron kWh register.
        """
        entry, offset = self._locate(name, block, registers)
        return value_at(registers, offset, entry[TYPE], self.word_order, scale, max_abs)

    def _locate(self, name, block, registers):
        # (entry, offset of the value in ``registers``, the result of reading ``block``)
        function, entry = self.find(name)
        b_function, b_start, b_count = block
        offset = entry[ADDRESS] - b_start
        if function != b_function or offset < 0 or offset + width(entry[TYPE]) > b_count:
            raise ProtocolError("not_in_block", str(name))
        if len(registers) != b_count:
            raise ProtocolError("bad_length", str(len(registers)))
        return entry, offset

    def encode(self, name, value):
        """Simulator side: the registers, in this map's word order, that hold ``value``."""
        _function, entry = self.find(name)
        return encode_value(entry[TYPE], value, self.word_order)


def scaled_value(dtype, words, scale=1, max_abs=0):
    """Integer round(value * scale) of a value of ``dtype`` given high word first."""
    return value_at(words, 0, dtype, HIGH_FIRST, scale, max_abs)


def encode_value(dtype, value, word_order=HIGH_FIRST):
    """Registers holding ``value`` as ``dtype`` in ``word_order`` (floats only for F32)."""
    words = float_to_words(value) if dtype == F32 else int_to_words(value, dtype)
    return ordered(words, word_order)


def _spans(entries):
    return tuple((e[ADDRESS], e[ADDRESS] + width(e[TYPE])) for e in entries)


# ------------------------------------------------------------------------------ Eastron SDM630
# Names of quantities a single-phase meter shares with the SDM630 are the same in both maps, so
# the firmware asks for "total_power" or "import_energy" whatever the meter.

SDM630_INPUTS = (
    ("l1_voltage", 0x0000, F32, "V", "r"),
    ("l2_voltage", 0x0002, F32, "V", "r"),
    ("l3_voltage", 0x0004, F32, "V", "r"),
    ("l1_current", 0x0006, F32, "A", "r"),
    ("l2_current", 0x0008, F32, "A", "r"),
    ("l3_current", 0x000A, F32, "A", "r"),
    ("l1_power", 0x000C, F32, "W", "r"),
    ("l2_power", 0x000E, F32, "W", "r"),
    ("l3_power", 0x0010, F32, "W", "r"),
    ("l1_apparent_power", 0x0012, F32, "VA", "r"),
    ("l2_apparent_power", 0x0014, F32, "VA", "r"),
    ("l3_apparent_power", 0x0016, F32, "VA", "r"),
    ("l1_reactive_power", 0x0018, F32, "var", "r"),
    ("l2_reactive_power", 0x001A, F32, "var", "r"),
    ("l3_reactive_power", 0x001C, F32, "var", "r"),
    ("l1_power_factor", 0x001E, F32, "", "r"),
    ("l2_power_factor", 0x0020, F32, "", "r"),
    ("l3_power_factor", 0x0022, F32, "", "r"),
    ("l1_phase_angle", 0x0024, F32, "deg", "r"),
    ("l2_phase_angle", 0x0026, F32, "deg", "r"),
    ("l3_phase_angle", 0x0028, F32, "deg", "r"),
    ("avg_voltage_ln", 0x002A, F32, "V", "r"),
    ("avg_current", 0x002E, F32, "A", "r"),
    ("sum_current", 0x0030, F32, "A", "r"),
    ("total_power", 0x0034, F32, "W", "r"),  # positive: import from the grid
    ("total_apparent_power", 0x0038, F32, "VA", "r"),
    ("total_reactive_power", 0x003C, F32, "var", "r"),
    ("total_power_factor", 0x003E, F32, "", "r"),
    ("total_phase_angle", 0x0042, F32, "deg", "r"),
    ("frequency", 0x0046, F32, "Hz", "r"),
    ("import_energy", 0x0048, F32, "kWh", "r"),
    ("export_energy", 0x004A, F32, "kWh", "r"),
    ("import_reactive_energy", 0x004C, F32, "kvarh", "r"),
    ("export_reactive_energy", 0x004E, F32, "kvarh", "r"),
    ("apparent_energy", 0x0050, F32, "kVAh", "r"),
    ("charge", 0x0052, F32, "Ah", "r"),
    ("power_demand", 0x0054, F32, "W", "r"),
    ("max_power_demand", 0x0056, F32, "W", "r"),
    ("apparent_power_demand", 0x0064, F32, "VA", "r"),
    ("max_apparent_power_demand", 0x0066, F32, "VA", "r"),
    ("neutral_current_demand", 0x0068, F32, "A", "r"),
    ("max_neutral_current_demand", 0x006A, F32, "A", "r"),
    ("l1_l2_voltage", 0x00C8, F32, "V", "r"),
    ("l2_l3_voltage", 0x00CA, F32, "V", "r"),
    ("l3_l1_voltage", 0x00CC, F32, "V", "r"),
    ("avg_voltage_ll", 0x00CE, F32, "V", "r"),
    ("neutral_current", 0x00E0, F32, "A", "r"),
    ("l1_voltage_thd", 0x00EA, F32, "%", "r"),
    ("l2_voltage_thd", 0x00EC, F32, "%", "r"),
    ("l3_voltage_thd", 0x00EE, F32, "%", "r"),
    ("l1_current_thd", 0x00F0, F32, "%", "r"),
    ("l2_current_thd", 0x00F2, F32, "%", "r"),
    ("l3_current_thd", 0x00F4, F32, "%", "r"),
    ("avg_voltage_ln_thd", 0x00F8, F32, "%", "r"),
    ("avg_current_thd", 0x00FA, F32, "%", "r"),
    ("l1_current_demand", 0x0102, F32, "A", "r"),
    ("l2_current_demand", 0x0104, F32, "A", "r"),
    ("l3_current_demand", 0x0106, F32, "A", "r"),
    ("max_l1_current_demand", 0x0108, F32, "A", "r"),
    ("max_l2_current_demand", 0x010A, F32, "A", "r"),
    ("max_l3_current_demand", 0x010C, F32, "A", "r"),
    ("l1_l2_voltage_thd", 0x014E, F32, "%", "r"),
    ("l2_l3_voltage_thd", 0x0150, F32, "%", "r"),
    ("l3_l1_voltage_thd", 0x0152, F32, "%", "r"),
    ("avg_voltage_ll_thd", 0x0154, F32, "%", "r"),
    ("total_energy", 0x0156, F32, "kWh", "r"),  # import + export
    ("total_reactive_energy", 0x0158, F32, "kvarh", "r"),
    ("l1_import_energy", 0x015A, F32, "kWh", "r"),
    ("l2_import_energy", 0x015C, F32, "kWh", "r"),
    ("l3_import_energy", 0x015E, F32, "kWh", "r"),
    ("l1_export_energy", 0x0160, F32, "kWh", "r"),
    ("l2_export_energy", 0x0162, F32, "kWh", "r"),
    ("l3_export_energy", 0x0164, F32, "kWh", "r"),
    ("l1_total_energy", 0x0166, F32, "kWh", "r"),
    ("l2_total_energy", 0x0168, F32, "kWh", "r"),
    ("l3_total_energy", 0x016A, F32, "kWh", "r"),
    ("l1_import_reactive_energy", 0x016C, F32, "kvarh", "r"),
    ("l2_import_reactive_energy", 0x016E, F32, "kvarh", "r"),
    ("l3_import_reactive_energy", 0x0170, F32, "kvarh", "r"),
    ("l1_export_reactive_energy", 0x0172, F32, "kvarh", "r"),
    ("l2_export_reactive_energy", 0x0174, F32, "kvarh", "r"),
    ("l3_export_reactive_energy", 0x0176, F32, "kvarh", "r"),
    ("l1_total_reactive_energy", 0x0178, F32, "kvarh", "r"),
    ("l2_total_reactive_energy", 0x017A, F32, "kvarh", "r"),
    ("l3_total_reactive_energy", 0x017C, F32, "kvarh", "r"),
)

SDM630_HOLDINGS = (
    ("demand_period", 0x0002, F32, "min", "rw"),  # 0, 5, 8, 10, 15, 20, 30, 60
    ("system_type", 0x000A, F32, "", "rw"),  # 1: 1P2W, 2: 3P3W, 3: 3P4W
    ("pulse1_width", 0x000C, F32, "ms", "rw"),  # 60, 100, 200
    ("password_lock", 0x000E, F32, "", "rw"),
    ("parity_stop", 0x0012, F32, "", "rw"),  # 0: N1, 1: E1, 2: O1, 3: N2
    ("modbus_address", 0x0014, F32, "", "rw"),  # 1..247
    ("pulse1_divisor", 0x0016, F32, "", "rw"),
    ("password", 0x0018, F32, "", "rw"),
    ("baud_rate", 0x001C, F32, "", "rw"),  # 0: 2400, 1: 4800, 2: 9600, 3: 19200, 4: 38400
    ("pulse1_energy_type", 0x0056, F32, "", "rw"),
    ("reset", 0xF010, U16, "", "w"),  # write 0 to reset the demand maxima
    ("serial_number", 0xFC00, U32, "", "r"),
)

# The meter answers reads across its documented parameter clusters, gaps included: ESPHome's
# sdm_meter reads 80 registers from 0x0000 in one request. Beyond a cluster it answers 02.
SDM630_INPUT_WINDOWS = ((0x0000, 0x006C), (0x00C8, 0x00D0), (0x00E0, 0x00FC),
                        (0x0102, 0x010E), (0x014E, 0x017E))
SDM630_HOLDING_WINDOWS = ((0x0000, 0x0020), (0x0056, 0x0058), (0xF010, 0xF011), (0xFC00, 0xFC02))

# ------------------------------------------------------------------------------ Eastron SDM120

SDM120_INPUTS = (
    ("l1_voltage", 0x0000, F32, "V", "r"),
    ("l1_current", 0x0006, F32, "A", "r"),
    ("total_power", 0x000C, F32, "W", "r"),  # "active power"; positive: import
    ("total_apparent_power", 0x0012, F32, "VA", "r"),
    ("total_reactive_power", 0x0018, F32, "var", "r"),
    ("total_power_factor", 0x001E, F32, "", "r"),
    ("total_phase_angle", 0x0024, F32, "deg", "r"),
    ("frequency", 0x0046, F32, "Hz", "r"),
    ("import_energy", 0x0048, F32, "kWh", "r"),
    ("export_energy", 0x004A, F32, "kWh", "r"),
    ("import_reactive_energy", 0x004C, F32, "kvarh", "r"),
    ("export_reactive_energy", 0x004E, F32, "kvarh", "r"),
    ("power_demand", 0x0054, F32, "W", "r"),
    ("max_power_demand", 0x0056, F32, "W", "r"),
    ("import_power_demand", 0x0058, F32, "W", "r"),
    ("max_import_power_demand", 0x005A, F32, "W", "r"),
    ("export_power_demand", 0x005C, F32, "W", "r"),
    ("max_export_power_demand", 0x005E, F32, "W", "r"),
    ("l1_current_demand", 0x0102, F32, "A", "r"),
    ("max_l1_current_demand", 0x0108, F32, "A", "r"),
    ("total_energy", 0x0156, F32, "kWh", "r"),
    ("total_reactive_energy", 0x0158, F32, "kvarh", "r"),
)

SDM120_HOLDINGS = (
    ("pulse1_width", 0x000C, F32, "ms", "rw"),
    ("parity_stop", 0x0012, F32, "", "rw"),
    ("modbus_address", 0x0014, F32, "", "rw"),
    ("baud_rate", 0x001C, F32, "", "rw"),  # 0: 2400, 1: 4800, 2: 9600, 5: 1200
    ("pulse1_mode", 0x0056, F32, "", "rw"),
    ("reset", 0xF010, U16, "", "w"),
    ("serial_number", 0xFC00, U32, "", "r"),
)

SDM120_INPUT_WINDOWS = ((0x0000, 0x0060), (0x0102, 0x010A), (0x0156, 0x015A))
SDM120_HOLDING_WINDOWS = ((0x000C, 0x0020), (0x0056, 0x0058), (0xF010, 0xF011), (0xFC00, 0xFC02))

# Eastron: "each request for data must be restricted to 40 parameters or less".
EASTRON_MAX_READ = 80

# ------------------------------------------------------------------ tmeter battery inverter v1
# Our own map: holding registers only (read 03, write 06/16), integers, 32-bit values high word
# first unless a device is declared LOW_FIRST. Power sign: + discharges (exports), - charges.
# Writes outside a limit, or of a mode/SoC bound that does not exist, answer exception 03; writes
# to read-only registers 02; writing one half of a 32-bit register 02.

BATTERY_HOLDINGS = (
    ("map_version", 0x0000, U16, "", "r"),  # 1
    ("status", 0x0001, U16, "", "r"),  # BATTERY_STATUS_*
    ("mode", 0x0002, U16, "", "rw"),  # BATTERY_MODE_*
    ("setpoint", 0x0010, S32, "W", "rw"),  # active power setpoint, + discharge
    ("max_charge_power", 0x0012, U32, "W", "r"),
    ("max_discharge_power", 0x0014, U32, "W", "r"),
    ("capacity", 0x0016, U32, "Wh", "r"),
    ("soc", 0x0018, U16, "0.01%", "r"),  # state of charge, 0..10000
    ("soc_min", 0x0019, U16, "0.01%", "rw"),  # discharging stops here
    ("soc_max", 0x001A, U16, "0.01%", "rw"),  # charging stops here
    ("power", 0x0020, S32, "W", "r"),  # measured AC power, + discharge
    ("energy", 0x0022, U32, "Wh", "r"),  # energy stored now
    ("charged_energy", 0x0024, U32, "Wh", "r"),  # lifetime AC energy taken in
    ("discharged_energy", 0x0026, U32, "Wh", "r"),  # lifetime AC energy given out
    # Mode 2 (an ESS "grid setpoint"): the household grid exchange the battery holds, + export,
    # charging at most target_charge_max and discharging at most target_discharge_max (0 keeps
    # it from that direction). One write of the three registers sets it (fc 16).
    ("grid_setpoint", 0x0028, S32, "W", "rw"),
    ("target_charge_max", 0x002A, U32, "W", "rw"),
    ("target_discharge_max", 0x002C, U32, "W", "rw"),
)
BATTERY_WINDOWS = ((0x0000, 0x002E),)

# Register "mode" takes the BATTERY_MODE_* values (in protocols/regcore.py: the firmware needs
# them without these tables); register "status" reads:
BATTERY_STATUS_IDLE = 0
BATTERY_STATUS_CHARGING = 1
BATTERY_STATUS_DISCHARGING = 2
BATTERY_STATUS_FULL = 3  # charging asked for, soc_max reached
BATTERY_STATUS_EMPTY = 4  # discharging asked for, soc_min reached


def sdm630():
    """Eastron SDM630-Modbus V2: three-phase meter."""
    return RegisterMap("sdm630", SDM630_INPUTS, SDM630_HOLDINGS, HIGH_FIRST, EASTRON_MAX_READ,
                       (3, 4, 16), SDM630_INPUT_WINDOWS, SDM630_HOLDING_WINDOWS)


def sdm120():
    """Eastron SDM120-Modbus: single-phase meter."""
    return RegisterMap("sdm120", SDM120_INPUTS, SDM120_HOLDINGS, HIGH_FIRST, EASTRON_MAX_READ,
                       (3, 4, 16), SDM120_INPUT_WINDOWS, SDM120_HOLDING_WINDOWS)


def battery(word_order=HIGH_FIRST):
    """The tmeter battery inverter map, in the device's word order."""
    return RegisterMap("battery", (), BATTERY_HOLDINGS, word_order, MAX_READ, (3, 6, 16), (),
                       BATTERY_WINDOWS)


def by_name(name):
    """The map called ``name`` ("sdm630", "sdm120", "battery", "battery_lowfirst")."""
    if name == "sdm630":
        return sdm630()
    if name == "sdm120":
        return sdm120()
    if name == "battery":
        return battery()
    if name == "battery_lowfirst":
        return battery(LOW_FIRST)
    raise ProtocolError("unknown_map", str(name))
