# Stand-in for the ESP32 port's `machine` (ports/esp32: machine_uart.c, machine_pin.c,
# machine_wdt.c, machine_rtc.c, modmachine.c), for running firmware/hal_esp32.py under the unix
# port. What the firmware relies on behaves as on the port:
#   UART      write() returns at once (the driver's TX ring buffer); txdone() is false until
#             the frame's last stop bit has left at the configured baud rate (uart_wait_tx_done
#             with a zero timeout). The line is a pty whose other end the simulator serves
#             (path in TMETER_UART<id>).
#   Pin       the RS-485 transceiver's DE/RE pin (TMETER_DE_PIN, default 4): while it is high the
#             receiver is off, so bytes the meter sends then are lost. The stand-in drops what
#             arrived while DE was high when DE goes low, and logs "RS485 ..." lines.
#   WDT       a missed feed resets the board: the process ends (exit 4) from a timer thread, as
#             the hardware resets however stuck the interpreter is; the next boot's
#             reset_cause() is WDT_RESET.
#   RTC       datetime() sets the wall clock of the stand-in `time` (2000-01-01 after power-on).
#   reset_cause()  modmachine.c's mapping of esp_reset_reason(): brownout is PWRON_RESET, as on
#             the port. The test writes this boot's cause to esp32_rst ("poweron", "brownout",
#             "wdt", "sw", "deepsleep"); a process killed without reset() powers on next time.
import os
import sys
import time

import _port

PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
_CAUSES = {"poweron": 1, "brownout": 1, "sw": 2, "panic": 2, "wdt": 3, "deepsleep": 4}
_cause = _CAUSES.get(_port.state("rst", "poweron"), HARD_RESET)
_port.put("rst", "poweron")
_de_pins = {}


def reset_cause():
    return _cause


def _restart(why, code):
    _port.put("rst", why)
    _port.put("rtc", str(time._off[0]))
    if code == 3:
        sys.exit(3)  # reset() from the main thread: end the process as hal_unix does
    # From the timer thread: sys.exit would end only the thread. The unix port has neither
    # os.kill nor os._exit; the shell's parent is this process.
    os.system("kill -KILL $PPID")


def reset():
    _restart("sw", 3)


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 2
    PULL_DOWN = 1

    def __init__(self, n, mode=IN, pull=None, value=None):
        self.n = n
        self._v = 0 if value is None else value
        self._high_us = 0
        if n == int(os.getenv("TMETER_DE_PIN") or "4"):
            _de_pins[n] = self

    def value(self, v=None):
        if v is None:
            return self._v
        v = 1 if v else 0
        if v and not self._v:
            self._high_us = time.ticks_us()
        if self._v and not v and self.n in _de_pins:
            for u in _UARTS:
                u._de_released()
        self._v = v

    on = lambda self: self.value(1)  # noqa: E731
    off = lambda self: self.value(0)  # noqa: E731


_UARTS = []


class UART:
    def __init__(self, uart_id, baudrate=115200, bits=8, parity=None, stop=1, tx=None, rx=None,
                 timeout=0, rxbuf=256, **kw):
        import termios
        self._f = open(os.getenv("TMETER_UART" + str(uart_id)), "r+b", buffering=0)
        fd = self._f.fileno()
        attrs = termios.tcgetattr(fd)
        # Raw 8N1, VMIN = VTIME = 0: a read returns at once with what has arrived.
        attrs[0] = attrs[1] = attrs[3] = 0
        attrs[2] = 0o60 | 0o200 | 0o4000
        cc = list(attrs[6])
        cc[5] = cc[6] = 0 if type(cc[5]) is int else b"\x00"
        attrs[6] = cc
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
        self.baud = baudrate
        self._bits = bits + 2 + (1 if parity is not None else 0) + (stop - 1)
        self._tx_end = time.ticks_us()
        self._buf = b""
        self.lost = 0
        self._deaf = time.ticks_ms()
        self.lag_max = 0
        _UARTS.append(self)

    def _pull(self):
        try:
            data = self._f.read(512)
        except OSError:
            data = None
        if data:
            if time.ticks_diff(self._deaf, time.ticks_ms()) > 0:
                return  # the collided answer
            self._buf += data

    def write(self, buf):
        now = time.ticks_us()
        start = self._tx_end if time.ticks_diff(self._tx_end, now) > 0 else now
        self._tx_end = time.ticks_add(start, len(buf) * self._bits * 1000000 // self.baud)
        self._f.write(bytes(buf))
        return len(buf)

    def txdone(self):
        return time.ticks_diff(time.ticks_us(), self._tx_end) >= 0

    def flush(self):
        while not self.txdone():
            pass

    def any(self):
        self._pull()
        return len(self._buf)

    def read(self, n=-1):
        self._pull()
        if not self._buf:
            return None
        n = len(self._buf) if n is None or n < 0 else n
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def _de_released(self):
        # The meter starts its answer TMETER_TURNAROUND_US after the request's last stop bit
        # (an Eastron SDM within a few ms; at least t3.5). A driver still on by then collides
        # with it and the receiver is off: the answer is lost. (The stand-in passes the request
        # to the pty at once, so bytes may already be here; only the timing decides.)
        lag = time.ticks_diff(time.ticks_us(), self._tx_end)
        if lag > self.lag_max:
            self.lag_max = lag
            print("RS485 DE released %d us after the transmit ended" % lag)
        if lag > int(os.getenv("TMETER_TURNAROUND_US") or "10000"):
            self._deaf = time.ticks_add(time.ticks_ms(), 50)
            self.lost += 1
            print("RS485 lost an answer: the driver was on %d us after the transmit (%d in all)"
                  % (lag, self.lost))

    def deinit(self):
        self._f.close()


class WDT:
    def __init__(self, id=0, timeout=5000):
        import _thread
        self.timeout = timeout
        self._fed = time.ticks_ms()
        _thread.start_new_thread(self._watch, ())

    def feed(self):
        self._fed = time.ticks_ms()

    def _watch(self):
        while True:
            time.sleep_ms(50)
            if time.ticks_diff(time.ticks_ms(), self._fed) > self.timeout:
                print("WDT reset")
                _restart("wdt", 4)


class RTC:
    def datetime(self, dt=None):
        if dt is None:
            t = time.gmtime()
            return (t[0], t[1], t[2], t[6] + 1, t[3], t[4], t[5], time.time_ns() // 1000 % 1000000)
        y, mo, d, _wd, h, mi, s, us = dt
        time._set_us((_days(y, mo, d) * 86400 + h * 3600 + mi * 60 + s) * 1000000 + us)
        _port.put("rtc", str(time._off[0]))


def _days(y, m, d):
    # Days from 1970-01-01 to a civil date (H. Hinnant, "chrono-compatible low-level date
    # algorithms", days_from_civil).
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def freq(*a):
    return 240000000


def unique_id():
    return b"\x24\x0a\xc4\x00\x00\x01"


def idle():
    pass
