# Hardware layer for ESP32 MicroPython (the product): machine.UART with a DE/RE pin for the
# RS-485 transceiver, network.WLAN, SNTP, machine.WDT, files on LittleFS at the flash root.
# Checked against the port's sources (micropython ports/esp32, v1.22 to v1.26); in tests it runs
# under the unix port on the stand-in modules of tests/firmware/esp32/.
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
_STAT_GOT_IP = 1010      # network.STAT_GOT_IP (ports/esp32/network_wlan.c)
_STAT_CONNECTING = 1001  # connect() requested, the driver is (re)trying by itself
_STAT_IDLE = 1000        # no connect() requested, or after disconnect()


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
        if self._de is None:
            self._uart.write(frame)
            return
        self._de.value(1)
        self._uart.write(frame)
        # Release the driver the moment the last stop bit has left (UART.txdone():
        # uart_wait_tx_done with no wait, machine_uart.c), without yielding: any task the loop
        # ran in between (DNS, a TLS handshake, a flash write) would keep the driver on while
        # the meter answers, and its answer would be lost (it may start after t3.5, 4 ms at
        # 9600 baud). The spin lasts the frame's line time, 9 ms for 8 bytes at 9600 baud;
        # bounded at twice that plus 5 ms in case txdone never turns true.
        limit = (len(frame) * 22000000) // self.baud + 5000
        start = time.ticks_us()
        while not self._uart.txdone():
            if time.ticks_diff(time.ticks_us(), start) > limit:
                break
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


def _host_port(spec, port):
    # "host" or "host:port" (a test's SNTP server on a free port).
    if ":" in spec:
        spec, p = spec.rsplit(":", 1)
        return spec, int(p)
    return spec, port


class Board(Files):
    runtime = "esp32"

    def __init__(self, cfg, base_dir=""):
        self.cfg = cfg
        self.base = base_dir
        self._synced = False
        self._last = 0            # the last now_ms() returned: the clock never goes back
        self._dns = {}            # (host, port) -> address, until a connection to it fails
        self._wlan = network.WLAN(network.STA_IF)
        # machine.reset_cause(): 1 power-on (and brownout: modmachine.c maps ESP_RST_BROWNOUT
        # to PWRON_RESET), 2 hard reset / panic, 3 watchdog, 4 deep sleep, 5 soft reset.
        self.rst = machine.reset_cause()
        self.quiet = False

    # -- time ------------------------------------------------------------------------------
    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def now_ms(self):
        """Milliseconds of unix time, monotonic. time.time_ns() (v1.22+, gettimeofday) is aligned
        with the RTC second, unlike time() plus ticks_ms() % 1000 (steps of -999..+1001 ms). A
        backward NTP correction holds the clock until real time catches up: a reading's t1
        never precedes its t0, an interval is never closed twice."""
        ms = time.time_ns() // 1000000 + _EPOCH_OFFSET * 1000
        if ms < self._last:
            return self._last
        self._last = ms
        return ms

    def time_ok(self):
        return self._synced

    def resume(self, ms):
        """Unsynchronised boot with a saved state: run the RTC on from the last time recorded
        (a power-on resets it to 2000-01-01, 26 years behind the saved interval, and no interval
        would close until NTP answers). Readings stay flagged FLAG_TIME_UNSYNCED until NTP."""
        if not self._synced and ms > self.now_ms():
            self._set_rtc(ms // 1000)

    def _set_rtc(self, secs):
        tm = time.gmtime(secs - _EPOCH_OFFSET)
        machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5], 0))

    # Not coroutines: a sleeping task holds no frame for them (asyncio.sleep_ms allocates nothing).
    def sleep_ms(self, ms):
        return asyncio.sleep_ms(ms if ms > 0 else 0)

    def sleep_sim_ms(self, sim_ms):
        return self.sleep_ms(sim_ms)

    def _resolve(self, host, port):
        # One DNS query (lwIP's getaddrinfo blocks the interpreter) per host until a connection
        # to the address fails; a numeric address costs none.
        key = (host, port)
        addr = self._dns.get(key)
        if addr is None:
            addr = socket.getaddrinfo(host, port)[0][-1]
            self._dns[key] = addr
        return addr

    async def sync_time(self):
        """One SNTP exchange (RFC 4330) on a non-blocking UDP socket; ntptime blocks the loop.
        The application calls it at its configured period (ntp_s), and every 30 s until it
        succeeds."""
        host, port = _host_port(self.cfg.get("ntp_host") or "pool.ntp.org", 123)
        sock = None
        try:
            addr = self._resolve(host, port)
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
                    secs = struct.unpack("!I", data[40:44])[0] - _NTP_DELTA
                    frac = struct.unpack("!I", data[44:48])[0]
                    tm = time.gmtime(secs - _EPOCH_OFFSET)
                    machine.RTC().datetime((tm[0], tm[1], tm[2], tm[6] + 1, tm[3], tm[4], tm[5],
                                            (frac * 1000000) >> 32))
                    self._synced = True
                    return True
                await asyncio.sleep_ms(10)
            self._dns.pop((host, port), None)  # no answer: ask DNS again next time
        except Exception:  # noqa: BLE001 - no network, DNS failure: stay unsynced, retry later
            self._dns.pop((host, port), None)
        finally:
            if sock is not None:
                sock.close()
        return False

    # -- network ---------------------------------------------------------------------------
    async def network_up(self):
        """True once the station has an address. connect() is called once per boot (or after
        the driver gave up, STAT_IDLE or a final error): the port's driver reconnects by itself
        after a loss (network_wlan.c, reconnects forever by default), and a new connect() would
        restart its association from scratch. Waits up to 10 s after its own connect() only."""
        wlan = self._wlan
        if wlan.isconnected():
            return True
        if wlan.status() == _STAT_CONNECTING:
            return False  # the driver is at it: say so now (the MQTT keepalive drops the session)
        wifi = self.cfg.get("wifi") or {}
        wlan.active(True)
        try:
            wlan.connect(wifi.get("ssid", ""), wifi.get("password", ""))
        except OSError:
            pass
        for _ in range(100):
            if wlan.isconnected():
                return True
            await asyncio.sleep_ms(100)
        return False

    async def open_connection(self, host, port, ssl_ctx=None):
        try:
            addr = self._resolve(host, port)
        except OSError:
            raise OSError("DNS failed")
        # The port gives ("a.b.c.d", port); the unix port (tests) a struct sockaddr_in.
        ip = addr[0] if type(addr) is tuple else "%d.%d.%d.%d" % tuple(addr[4:8])
        try:
            if ssl_ctx is None:
                return await asyncio.open_connection(ip, port)
            return await asyncio.open_connection(ip, port, ssl=ssl_ctx, server_hostname=host)
        except Exception:
            self._dns.pop((host, port), None)  # the address may have moved: resolve again
            raise

    # -- Modbus link -----------------------------------------------------------------------
    def open_link(self, mb):
        return UartLink(mb)

    # -- files: firmware/files.py (LittleFS: rename is atomic) ----------------------------
    # -- health ----------------------------------------------------------------------------
    def watchdog(self, timeout_ms):
        return machine.WDT(timeout=timeout_ms)

    def partition(self):
        # The ROMFS partition an image is written into (firmware/ota.py): MicroPython >= 1.25
        # with a partition labelled romfs (ports/esp32/esp32_partition.c).
        import vfs
        return vfs.rom_ioctl(2, 0)

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
