"""A minimal Modbus RTU-over-TCP household (meter unit 1, battery unit 2) for firmware tests
that need fault timing the simulator does not offer. Serves the register maps of
protocols/registers.py, with energy counters driven by the shared simulated clock."""

from __future__ import annotations

import socket
import threading

from protocols import modbus, registers
from sim_hardware.clock import SimClock


class RtuHousehold:
    def __init__(self, clock: SimClock, import_w: int = 2000, export_w: int = 500,
                 meter_unit: int = 1, battery_unit: int | None = 2) -> None:
        self.clock = clock
        self.import_w = import_w
        self.export_w = export_w
        self.meter_unit = meter_unit
        self.battery_unit = battery_unit
        self.meter_map = registers.sdm630()
        self.batt_map = registers.battery()
        self.t0 = clock.now()
        self.offset_imp = 1_000_000.0  # Wh already on the counters
        self.offset_exp = 200_000.0
        self.lock = threading.Lock()
        self.timeouts = 0      # answer none of the next N requests
        self.corrupt = 0       # corrupt the CRC of the next N answers
        self.requests = 0
        self.batt = {"mode": registers.BATTERY_MODE_SELF_CONSUMPTION, "setpoint": 0,
                     "soc": 5000, "capacity": 10000, "max_charge_power": 3000,
                     "max_discharge_power": 3000, "soc_min": 1000, "soc_max": 9500}
        self.writes: list[tuple[int, int, list[int]]] = []
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def link(self) -> str:
        return f"tcp:127.0.0.1:{self.port}"

    def counters_wh(self) -> tuple[float, float]:
        dt = self.clock.now() - self.t0
        return (self.offset_imp + self.import_w * dt / 3600, self.offset_exp + self.export_w * dt / 3600)

    def reset_counters(self) -> None:
        """The meter's energy registers restart from zero (as after a meter replacement)."""
        with self.lock:
            imp, exp = self.counters_wh()
            self.offset_imp -= imp
            self.offset_exp -= exp

    def battery_power_w(self) -> int:
        with self.lock:
            if self.batt["mode"] == registers.BATTERY_MODE_SETPOINT:
                return self.batt["setpoint"]
            return 0

    def close(self) -> None:
        self._stop = True
        self.sock.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _read_request(self, conn: socket.socket) -> bytes | None:
        buf = b""
        while True:
            need = 8
            if len(buf) >= 7 and buf[1] == 16:
                need = 9 + buf[6]
            if len(buf) >= need:
                return buf[:need]
            chunk = conn.recv(need - len(buf))
            if not chunk:
                return None
            buf += chunk

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while True:
                try:
                    req = self._read_request(conn)
                except OSError:
                    return
                if req is None:
                    return
                with self.lock:
                    self.requests += 1
                    if self.timeouts > 0:
                        self.timeouts -= 1
                        continue
                    reply = self._answer(req)
                    if reply and self.corrupt > 0:
                        self.corrupt -= 1
                        reply = reply[:-1] + bytes([reply[-1] ^ 0x5A])
                if reply:
                    try:
                        conn.sendall(reply)
                    except OSError:
                        return

    def _answer(self, req: bytes) -> bytes | None:
        unit, fc, addr, count, values = modbus.parse_request(req)
        if unit == self.meter_unit and fc == 4:
            regs = [0] * count
            imp, exp = self.counters_wh()
            vals = {"import_energy": imp / 1000, "export_energy": exp / 1000,
                    "total_power": float(self.import_w - self.export_w)}
            for name, v in vals.items():
                _f, e = self.meter_map.find(name)
                if addr <= e[1] and e[1] + 2 <= addr + count:
                    regs[e[1] - addr:e[1] - addr + 2] = self.meter_map.encode(name, v)
            return modbus.build_read_response(unit, fc, regs)
        if unit == self.battery_unit and fc == 3:
            regs = [0] * 0x28
            b = dict(self.batt)
            b["power"] = b["setpoint"] if b["mode"] == registers.BATTERY_MODE_SETPOINT else 0
            b["map_version"] = 1
            for e in self.batt_map.holdings:
                if e[0] in b:
                    w = self.batt_map.encode(e[0], b[e[0]])
                    regs[e[1]:e[1] + len(w)] = w
            return modbus.build_read_response(unit, fc, regs[addr:addr + count])
        if unit == self.battery_unit and fc in (6, 16):
            self.writes.append((fc, addr, values))
            if addr == 0x0002:
                self.batt["mode"] = values[0]
            elif addr == 0x0010 and len(values) == 2:
                self.batt["setpoint"] = registers.words_to_int(values[0], values[1], True)
            else:
                return modbus.build_exception(unit, fc, modbus.ILLEGAL_ADDRESS)
            return modbus.build_write_response(unit, fc, addr, values[0] if fc == 6 else count)
        return modbus.build_exception(unit, fc, modbus.ILLEGAL_FUNCTION)
