# Hardware layer for the MicroPython unix port and CPython (CI, demo, bench, load tests).
#
# The UART becomes a TCP connection to a simulated meter speaking Modbus RTU framing, or a
# serial tty; the clock is the host's, optionally accelerated (the run's simulated clock,
# protocols/simclock.py); files live in a folder per meter. Only this module and hal_esp32 may
# test which interpreter runs.
import asyncio
import gc
import os
import random
import sys
import time
from firmware.files import Files
from protocols import const, simclock

_UPY = sys.implementation.name == "micropython"
_ROMFILE = const("firmware.romfile")
_PARTITION = const("romfs-partition")  # a board's ROMFS partition (firmware/main.py mount())

if _UPY:
    _ticks_ms = time.ticks_ms
    _ticks_diff = time.ticks_diff
    _sleep_ms = asyncio.sleep_ms
else:
    def _ticks_ms():
        return time.monotonic_ns() // 1000000

    def _ticks_diff(a, b):
        return a - b

    def _sleep_ms(ms):
        return asyncio.sleep(ms / 1000)


def _real_ms():
    return time.time_ns() // 1000000


class TcpLink:
    """RTU frames over a TCP stream (a simulated RS-485 bus). Reopened after any error."""

    def __init__(self, host, port, baud):
        self.host = host
        self.port = port
        self.baud = baud
        self._r = None
        self._w = None

    async def _open(self):
        if self._w is None:
            self._r, self._w = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), 2)

    def close(self):
        w = self._w
        self._r = self._w = None
        if w is not None:
            try:
                w.close()
                # MicroPython's Stream.close() does nothing (only wait_closed() closes, and this
                # is no coroutine): close its socket, or each reopen after a timeout leaks one.
                if _UPY:
                    w.s.close()
            except Exception:  # noqa: BLE001 - closing a broken socket may fail; it is gone
                pass

    async def send(self, frame):
        try:
            await self._open()
            self._w.write(frame)
            await asyncio.wait_for(self._w.drain(), 2)
        except Exception:
            self.close()
            raise OSError("link send failed")

    async def recv(self, n, timeout_ms):
        """Up to ``n`` bytes, b"" when none arrive within ``timeout_ms``."""
        if self._r is None:
            raise OSError("link closed")
        try:
            data = await asyncio.wait_for(self._r.read(n), timeout_ms / 1000)
        except asyncio.TimeoutError:
            return b""
        except Exception:
            self.close()
            raise OSError("link recv failed")
        if not data:
            self.close()
            raise OSError("link closed by peer")
        return data

    def discard(self):
        # A TCP stream has no line noise to drop; late bytes of a timed-out answer are dropped
        # by reopening, which Master.transact asks for after a timeout.
        self.close()


class SoftWatchdog:
    """The unix stand-in for machine.WDT: a missed deadline ends the process (exit 3), as the
    hardware watchdog would reset the board."""

    def __init__(self, timeout_ms):
        self.timeout_ms = timeout_ms
        self.fed = _ticks_ms()

    def feed(self):
        self.fed = _ticks_ms()

    def expired(self):
        return _ticks_diff(_ticks_ms(), self.fed) > self.timeout_ms


class Board(Files):
    runtime = "micropython-unix" if _UPY else "cpython"

    def __init__(self, cfg, base="."):
        self.cfg = cfg
        self.base = base  # the meter's folder
        # The run's clock in integer milliseconds of the host's unix time (the config gives
        # seconds). Floats appear only here, in converting the config's seconds, and in now_ms
        # with a speed other than 1 (MicroPython unix and CPython floats are 64-bit).
        clk = cfg.get("clock") or {}
        start = clk.get("start")
        epoch = clk.get("epoch")
        self.clock = simclock.SimClock(None if start is None else int(start * 1000),
                                       None if epoch is None else int(epoch * 1000),
                                       clk.get("speed"), _real_ms())
        self.quiet = False
        self.rst = 0  # no reset cause off a board (hal_esp32: machine.reset_cause())

    # -- time ------------------------------------------------------------------------------
    def ticks_ms(self):
        return _ticks_ms()

    def ticks_diff(self, a, b):
        return _ticks_diff(a, b)

    def now_ms(self):
        return int(self.clock.at_wall(_real_ms()))

    def time_ok(self):
        return True  # the host clock is NTP-disciplined by the host (or is the simulator's)

    def resume(self, ms):
        pass  # the host's clock is never unsynchronised (hal_esp32.resume)

    # The sleeps return what asyncio's sleep returns rather than awaiting it in a coroutine of
    # their own: a sleeping task then holds no frame for them (on MicroPython, sleep_ms
    # allocates nothing at all).
    def sleep_ms(self, ms):
        return _sleep_ms(ms if ms > 0 else 0)

    def sleep_sim_ms(self, sim_ms):
        # Real milliseconds, rounded up: a sleep never ends before its simulated time.
        speed = self.clock.speed
        return self.sleep_ms(sim_ms if speed == 1 or sim_ms <= 0 else int(sim_ms / speed) + 1)

    async def sync_time(self):
        return True

    # -- network ---------------------------------------------------------------------------
    async def network_up(self):
        return True

    async def open_connection(self, host, port, ssl_ctx=None):
        if ssl_ctx is None:
            return await asyncio.open_connection(host, port)
        if _UPY:
            return await asyncio.open_connection(host, port, ssl=ssl_ctx)
        return await asyncio.open_connection(host, port, ssl=ssl_ctx, server_hostname=host)

    # -- Modbus link -----------------------------------------------------------------------
    def open_link(self, mb):
        link = mb.get("link", "tcp:127.0.0.1:5020")
        baud = mb.get("baud", 9600)
        if link.startswith("tcp:"):
            host, port = link[4:].rsplit(":", 1)
            return TcpLink(host, int(port), baud)
        if link.startswith("tty:"):
            from firmware.hal_tty import TtyLink  # only serial benches pay for it
            return TtyLink(link[4:], baud, _ticks_ms, _ticks_diff)
        raise ValueError("unix port link must be tcp:HOST:PORT or tty:PATH, not " + link)

    # -- files -----------------------------------------------------------------------------
    def _sync(self, f):
        f.flush()
        if not _UPY:
            os.fsync(f.fileno())  # CPython: to the disk before the rename makes it visible

    # -- health ----------------------------------------------------------------------------
    def watchdog(self, timeout_ms):
        return SoftWatchdog(timeout_ms)

    def partition(self):
        # The ROMFS partition an image is written into (firmware/ota.py): a file here, behind
        # a module whose names a booted meter does not hold (the name is a long literal).
        __import__(_ROMFILE)
        part = sys.modules[_ROMFILE]
        part.path = self.path(_PARTITION)
        return part

    def reset(self):
        # No board to reset: end the process; a supervisor (test, systemd, `tmeter fw run`)
        # restarts it like a power-on.
        sys.exit(3)

    def collect(self):
        gc.collect()

    def mem_free(self):
        return gc.mem_free() if _UPY else 0

    def mem_peak(self):
        if _UPY:
            import micropython
            return micropython.mem_peak() if hasattr(micropython, "mem_peak") else 0
        return 0

    def randbits(self, n):
        return random.getrandbits(n)

    def log(self, msg):
        if not self.quiet:
            print(msg)
