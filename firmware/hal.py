# The hardware layer: the only module that knows which runtime the firmware is on.
#
# Everything else imports ``Board`` from here and talks to it: clock and timers, files, the
# Modbus link, the network, the watchdog and memory figures. ESP32 MicroPython gets the board
# implementation; the MicroPython unix port and CPython (load tests) share the unix one.
import sys

if sys.platform == "esp32":
    from firmware.hal_esp32 import Board  # noqa: F401
else:
    from firmware.hal_unix import Board  # noqa: F401
