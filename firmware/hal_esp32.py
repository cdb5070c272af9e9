# Hardware layer for ESP32 MicroPython (the product): machine.UART with a DE/RE pin for the
# RS-485 transceiver, network.WLAN, SNTP, machine.WDT, files on LittleFS at the flash root.
import asyncio
import gc
import random
import socket
import struct
import time

import machine
import network
from firmware.files import Files

# ESP32 ports before v1.22 count from 2000-01-01; the wire protocol counts from 1970.
_EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0
_NTP_DELTA = 2208988800  # seconds from 1900-01-01 (NTP era 0) to 1970-01-01


class UartLink:
    """RS-485 half duplex: DE/RE high while transmitting, low to listen (Modbus over serial
    line V1.02, section 3.3: two-wire, one driver at a time)."""

    def __init__(self, mb):
        self.baud = mb.get("baud", 9600)
        self._uart = machine.UART(mb.get("uart_id", 2), baudrate=self.baud, bits=8, parity=None,
                                  stop=1, tx=mb.get("tx_pin", 17), rx=mb.get("rx_pin", 16),
                                  timeout=0, rxbuf=512)
        de = mb.get("de_pin", 4)
        self._de = machine.Pin(de, machine.Pin.OUT, value=0) if de is not None else None

    def close(self):
        pass

    async def send(self, frame):
        self.discard()
        if self._de is not None:
            self._de.value(1)
        self._uart.write(frame)
        # Keep the driver on until the last stop bit has left the shift register, or the
        # frame's tail is cut; wait_tx_done polls without blocking the loop for long.
        chars_us = (len(frame) * 11 * 1000000) // self.baud
        await asyncio.sleep_ms(chars_us // 1000)
        while not self._uart.txdone():
            await asyncio.sleep_ms(0)
        if self._de is not None:
            self._de.value(0)

    async def recv(self, n, timeout_ms):
        start = time.ticks_ms()
        while True:
            if self._uart.any():
                return self._uart.read(min(n, self._uart.any()))
            if time.ticks_diff(time.ticks_ms(), start) >= timeout_ms:
                return b""
            await asyncio.sleep_ms(1)

    def discard(self):
        while self._uart.any():
            self._uart.read()


class Board(Files):
    runtime = "esp32"

    def __init__(self, cfg, base_dir=""):
        self.cfg = cfg
        self.base = base_dir
        self._synced = False
        self._wlan = network.WLAN(network.STA_IF)
        self.quiet = False

    # -- time ------------------------------------------------------------------------------
    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def now_ms(self):
        # time.time() has 1 s resolution; ticks give the milliseconds within the second.
        return (time.time() + _EPOCH_OFFSET) * 1000 + time.ticks_ms() % 1000

    def time_ok(self):
        return self._synced

    # Not coroutines: a sleeping task holds no frame for them (asyncio.sleep_ms allocates nothing).
    def sleep_ms(self, ms):
        return asyncio.sleep_ms(ms if ms > 0 else 0)

    def sleep_sim_ms(self, sim_ms):
        return self.sleep_ms(sim_ms)

    async def sync_time(self):
        """One SNTP exchange (RFC 4330) on a non-blocking UDP socket; ntptime blocks the loop."""
        host = self.cfg.get("ntp_host") or "pool.ntp.org"
        sock = None
        try:
            addr = socket.getaddrinfo(host, 123)[0][-1]
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.setblocking(False)
            query = bytearray(48)
            query[0] = 0x1B  # LI 0, version 3, mode 3 (client)
            sock.sendto(query, addr)
            for _ in range(200):
                try:
                    data = sock.recv(48)
                except OSError:
                    data = None
                if data and len(data) >= 48:
                    secs = struct.unpack("!I", data[40:44])[0] - _NTP_DELTA - _EPOCH_OFFSET
                    tm = time.gmtime(secs)
                    machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))
                    self._synced = True
                    return True
                await asyncio.sleep_ms(10)
        except Exception:  # noqa: BLE001 - no network, DNS failure: stay unsynced, retry later
            pass
        finally:
            if sock is not None:
                sock.close()
        return False

    # -- network ---------------------------------------------------------------------------
    async def network_up(self):
        if self._wlan.isconnected():
            return True
        wifi = self.cfg.get("wifi") or {}
        self._wlan.active(True)
        try:
            self._wlan.connect(wifi.get("ssid", ""), wifi.get("password", ""))
        except OSError:
            pass
        for _ in range(100):
            if self._wlan.isconnected():
                return True
            await asyncio.sleep_ms(100)
        return False

    async def open_connection(self, host, port, ssl_ctx=None):
        if ssl_ctx is None:
            return await asyncio.open_connection(host, port)
        return await asyncio.open_connection(host, port, ssl=ssl_ctx)

    # -- Modbus link -----------------------------------------------------------------------
    def open_link(self, mb):
        return UartLink(mb)

    # -- files: firmware/files.py (LittleFS: rename is atomic) ----------------------------
    # -- health ----------------------------------------------------------------------------
    def watchdog(self, timeout_ms):
        return machine.WDT(timeout=timeout_ms)

    def reset(self):
        machine.reset()

    def collect(self):
        gc.collect()

    def mem_free(self):
        return gc.mem_free()

    def mem_peak(self):
        return gc.mem_alloc()

    def randbits(self, n):
        return random.getrandbits(n)

    def log(self, msg):
        if not self.quiet:
            print(msg)
