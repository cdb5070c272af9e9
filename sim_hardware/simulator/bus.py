"""One bus endpoint: a pymodbus server carrying the devices of one RS-485 line.

Transports: ``rtu-tcp`` (RTU frames over a TCP stream, what an RS-485-to-TCP converter or the
firmware's unix link speaks), ``tcp`` (Modbus TCP, MBAP header, a TCP gateway in front of the
line) and ``serial`` (RTU on a tty: a USB RS-485 adapter, or one side of a pty pair).

The bus layer is where faults and RS-485 behaviour live, through pymodbus's trace hooks:
- a request for a unit that is not on the line gets no answer on RTU (nobody drives the bus)
  and exception 0B (gateway target failed to respond) on Modbus TCP;
- a powered-off device, or a timeout fault, gives no answer;
- a function the device lacks gets exception 01, a read beyond its per-request limit 03;
- exception and delay faults replace or postpone the answer; crc faults corrupt its CRC.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from sim_hardware.simulator.clock import SimClock
from sim_hardware.simulator.devices import ModbusDevice
from sim_hardware.simulator.faults import FaultSchedule

log = logging.getLogger(__name__)

TRANSPORTS = ("rtu-tcp", "tcp", "serial")


@dataclass
class BusStats:
    requests: int = 0
    unknown_unit: int = 0
    unanswered: int = 0  # powered off or timeout fault
    exceptions: int = 0  # injected or protocol-level (01, 03, 0B) answers from the bus layer
    delayed: int = 0
    corrupted: int = 0


class _FixedAnswer:
    """Stands in for a request whose answer is an exception decided by the bus layer."""

    def __init__(self, pdu: ModbusPDU, code: int) -> None:
        self.function_code = pdu.function_code
        self.dev_id = pdu.dev_id
        self.transaction_id = pdu.transaction_id
        self.code = code

    async def datastore_update(self, _context: Any, _device_id: int) -> ModbusPDU:
        return ExceptionResponse(self.function_code, self.code)


class _LateAnswer:
    """A request answered normally, ``delay_s`` wall seconds late."""

    def __init__(self, pdu: ModbusPDU, delay_s: float) -> None:
        self._pdu = pdu
        self._delay_s = delay_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pdu, name)

    async def datastore_update(self, context: Any, device_id: int) -> ModbusPDU:
        await asyncio.sleep(self._delay_s)
        return await self._pdu.datastore_update(context, device_id)


class BusEndpoint:
    """The devices of one line behind one server; ``start()``/``stop()`` bound its life."""

    def __init__(self, name: str, devices: list[ModbusDevice], transport: str, clock: SimClock,
                 faults: FaultSchedule, host: str = "127.0.0.1", port: int | None = None,
                 serial_port: str | None = None, baudrate: int = 9600) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {TRANSPORTS}, not {transport!r}")
        if transport == "serial" and not serial_port:
            raise ValueError("the serial transport needs serial_port")
        self.name = name
        self.devices = {d.unit: d for d in devices}
        self.transport = transport
        self.clock = clock
        self.faults = faults
        self.host = host
        self.port = port  # None: the OS picks a free one when the server starts
        self.serial_port = serial_port
        self.baudrate = baudrate
        self.stats = BusStats()
        self._server: ModbusTcpServer | ModbusSerialServer | None = None

    @property
    def rtu(self) -> bool:
        return self.transport != "tcp"

    # ------------------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        simdevices = [d.simdevice() for d in self.devices.values()]
        hooks: dict[str, Any] = {"trace_pdu": self._gate, "trace_packet": self._packet}
        if self.transport == "serial":
            self._server = ModbusSerialServer(simdevices, framer=FramerType.RTU,
                                              port=self.serial_port or "", baudrate=self.baudrate,
                                              **hooks)
        else:
            framer = FramerType.RTU if self.rtu else FramerType.SOCKET
            self._server = ModbusTcpServer(simdevices, framer=framer,
                                           address=(self.host, self.port or 0), **hooks)
        await asyncio.wait_for(self._server.serve_forever(background=True), timeout=10)
        if self.transport != "serial" and not self.port:
            # Bound to port 0: ask the listening socket (picking a "free" port first and binding
            # it later races with every other endpoint doing the same).
            self.port = int(self._server.transport.sockets[0].getsockname()[1])
        log.info("bus up name=%s transport=%s endpoint=%s units=%s", self.name, self.transport,
                 self.endpoint, sorted(self.devices))

    async def stop(self) -> None:
        if self._server is not None:
            server, self._server = self._server, None
            await asyncio.wait_for(server.shutdown(), timeout=10)
            log.info("bus down name=%s", self.name)

    @property
    def endpoint(self) -> str:
        if self.transport == "serial":
            return f"{self.serial_port}@{self.baudrate}"
        return f"{self.host}:{self.port}"

    def manifest(self) -> list[dict[str, Any]]:
        out = []
        for device in self.devices.values():
            entry = device.manifest()
            entry.update(bus=self.name, transport=self.transport)
            if self.transport == "serial":
                entry.update(host=None, port=None, serial_port=self.serial_port,
                             baud=self.baudrate)
            else:
                entry.update(host=self.host, port=self.port)
            out.append(entry)
        return out

    # ------------------------------------------------------------------------ the gate
    def _gate(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU | None:
        """pymodbus calls this with every decoded request (and every response): returning
        None drops the request unanswered; returning a stand-in changes the answer."""
        if sending:
            return pdu
        self.stats.requests += 1
        device = self.devices.get(pdu.dev_id)
        if device is None:
            self.stats.unknown_unit += 1
            if self.rtu:
                return None
            return self._answer(pdu, ExcCodes.GATEWAY_NO_RESPONSE)
        t = self.clock.now()
        if not device.is_powered(self.faults, t):
            self.stats.unanswered += 1
            return None
        fc = pdu.function_code
        if fc not in device.regmap.functions:
            return self._answer(pdu, ExcCodes.ILLEGAL_FUNCTION)
        if fc in (3, 4) and pdu.count > device.regmap.max_read:
            return self._answer(pdu, ExcCodes.ILLEGAL_VALUE)
        return self._apply_fault(device, pdu, t)

    def _apply_fault(self, device: ModbusDevice, pdu: ModbusPDU, t: float) -> Any:
        fault = self.faults.request_fault(device.device_id, t, pdu.function_code)
        if fault is None:
            return pdu
        if fault.kind == "timeout":
            self.stats.unanswered += 1
            return None
        if fault.kind == "exception":
            return self._answer(pdu, fault.code)
        self.stats.delayed += 1
        return _LateAnswer(pdu, fault.delay_s)

    def _answer(self, pdu: ModbusPDU, code: int) -> _FixedAnswer:
        self.stats.exceptions += 1
        return _FixedAnswer(pdu, code)

    def _packet(self, sending: bool, data: bytes) -> bytes:
        """Outgoing RTU frames of a device with a crc fault leave with both CRC bytes flipped."""
        if not sending or not self.rtu or len(data) < 4:
            return data
        device = self.devices.get(data[0])
        if device is None or not self.faults.corrupts(device.device_id, self.clock.now()):
            return data
        self.stats.corrupted += 1
        return data[:-2] + bytes((data[-2] ^ 0xFF, data[-1] ^ 0xFF))
