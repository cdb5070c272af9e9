# Modbus RTU master over a hal link (Modbus over Serial Line V1.02; Application Protocol V1.1b3).
#
# Framing, CRC and parsing are protocols/rtu.py (the simulator serves the same framing); this module
# adds what a master needs on a real bus: the t3.5 silence before each request (2.5.1.1), a
# response timeout derived from the baud rate, bounded retries with backoff, exception codes
# surfaced to the caller (not retried: the device answered), and per-device online/offline
# state so a caller never takes an old value for a fresh one.
from protocols import const, rtu
from protocols.errors import ProtocolError

# Time the device may take between the end of our request and the start of its answer.
# Eastron specifies < 100 ms; inverters are slower. Added to the line time of a full frame.
_TURNAROUND_MS = const(200)


class ModbusError(Exception):
    """A transaction failed. ``reason``: "exception" (the device answered with an exception
    response; ``code`` is its exception code), "timeout", "crc", "frame" or "link"."""

    def __init__(self, reason, code=0):
        super().__init__(reason, code)
        self.reason = reason
        self.code = code


class Master:
    def __init__(self, board, link, cfg, counters):
        self.board = board
        self.link = link
        baud = cfg.get("baud", 9600)
        self.gap_ms = (rtu.frame_gap_us(baud) + 999) // 1000
        derived = rtu.frame_time_us(baud, rtu.MAX_ADU) // 1000 + _TURNAROUND_MS
        self.timeout_ms = cfg.get("timeout_ms") or derived
        self.retries = cfg.get("retries", 2)
        self.offline_after = cfg.get("offline_after", 3)
        self.c = counters
        for k in ("mb_err", "mb_retry", "mb_timeout", "mb_crc", "mb_exc", "mb_offline"):
            self.c.setdefault(k, 0)
        self._fails = {}          # unit -> failed transactions in a row
        self._last_io = board.ticks_ms()

    def online(self, unit):
        return self._fails.get(unit, 0) < self.offline_after

    def _result(self, unit, ok):
        before = self.online(unit)
        self._fails[unit] = 0 if ok else self._fails.get(unit, 0) + 1
        if before and not self.online(unit):
            self.c["mb_offline"] += 1
            self.board.log("modbus: unit " + str(unit) + " offline")
        elif not before and self.online(unit):
            self.board.log("modbus: unit " + str(unit) + " online")

    async def _exchange(self, request):
        # t3.5 of silence between frames: wait until the bus has been quiet long enough.
        quiet = self.board.ticks_diff(self.board.ticks_ms(), self._last_io)
        if quiet < self.gap_ms:
            await self.board.sleep_ms(self.gap_ms - quiet)
        await self.link.send(request)
        start = self.board.ticks_ms()
        buf = b""
        want = 0
        while True:
            left = self.timeout_ms - self.board.ticks_diff(self.board.ticks_ms(), start)
            # Past the timeout, one look without waiting at what the UART has buffered: the
            # answer may have come in time while something blocked the interpreter (DNS, a
            # TLS handshake), and then it is not lost.
            chunk = await self.link.recv(rtu.MAX_ADU - len(buf), left if left > 0 else 0)
            if not chunk and left <= 0:
                self._last_io = self.board.ticks_ms()
                raise ModbusError("timeout")
            if chunk:
                buf += chunk
                if not want:
                    try:
                        want = rtu.response_frame_length(buf)
                    except ProtocolError:
                        raise ModbusError("frame")
                if want and len(buf) >= want:
                    self._last_io = self.board.ticks_ms()
                    if len(buf) > want:
                        raise ModbusError("frame")
                    return buf

    async def transact(self, unit, request):
        """Send ``request`` to ``unit``; returns what rtu.parse_response gives."""
        last = None
        for attempt in range(1 + self.retries):
            if attempt:
                self.c["mb_retry"] += 1
                # Backoff: a device that missed one frame (busy, noise burst) gets more quiet
                # time each try: 25, 50, 100 ms ...
                await self.board.sleep_ms(25 << (attempt - 1))
            try:
                frame = await self._exchange(request)
                result = rtu.parse_response(request, frame)
                self._result(unit, True)
                return result
            except ModbusError as e:
                last = e
                if e.reason == "timeout":
                    self.c["mb_timeout"] += 1
            except OSError:
                last = ModbusError("link")
            except ProtocolError as e:
                if e.code == "modbus_exception":
                    # The device is there and said no: surface the code, do not retry.
                    self.c["mb_exc"] += 1
                    self._result(unit, True)
                    raise ModbusError("exception", e.exception_code)
                last = ModbusError("crc" if e.code == "bad_crc" else "frame")
                if e.code == "bad_crc":
                    self.c["mb_crc"] += 1
            # Whatever is left of a failed answer must not be read as the next one.
            self.link.discard()
        self.c["mb_err"] += 1
        self._result(unit, False)
        raise last

    async def read(self, unit, function, start, count):
        return await self.transact(unit, rtu.build_read(unit, function, start, count))

    async def write_single(self, unit, address, value):
        return await self.transact(unit, rtu.build_write_single(unit, address, value))

    async def write_multiple(self, unit, address, values):
        return await self.transact(unit, rtu.build_write_multiple(unit, address, values))
