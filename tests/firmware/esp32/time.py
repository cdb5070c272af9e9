# Stand-in for the ESP32 port's `time`: ticks are the host's; the wall clock is the board's RTC,
# which after power-on starts at 2000-01-01 00:00:00 (an ESP32 RTC without a battery: the
# port's epoch is 1970 since v1.22, but the RTC counts from its 2000 reset value) until
# machine.RTC().datetime() or NTP sets it. time_ns() as ports/esp32/mphalport.c
# mp_hal_time_ns (gettimeofday, microsecond resolution).
from _port import builtin, state

_t = builtin("time")
for _k in dir(_t):
    if not _k.startswith("__"):
        globals()[_k] = getattr(_t, _k)

_RTC_RESET_S = 946684800  # 2000-01-01 in unix seconds
# Offset of the board's RTC from the host's clock, in microseconds. A soft or watchdog reset
# keeps the RTC running on a real ESP32; the stand-in keeps it across boots in a file.
_keep = state("rst", "poweron") in ("wdt", "sw", "panic")
_off = [int(state("rtc", "0")) if _keep else _RTC_RESET_S * 1000000 - _t.time_ns() // 1000]


def _us():
    return _t.time_ns() // 1000 + _off[0]


def time_ns():
    return _us() * 1000


def time():
    return _us() // 1000000


def gmtime(secs=None):
    return _t.gmtime(time() if secs is None else secs)


localtime = gmtime


def _set_us(us):
    _off[0] = us - _t.time_ns() // 1000
