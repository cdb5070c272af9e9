# The hardware layer: the only module that knows which runtime the firmware is on.
#
# Everything else imports ``Board`` from here and talks to it: clock and timers, files, the
# Modbus link, the network, the watchdog and memory figures. A board is recognised by the ESP32
# port's own `esp32` module (tests/firmware/esp32/ has a stand-in of it and of the port's other
# modules, so firmware/hal_esp32.py runs under the unix port in tests); the MicroPython unix
# port and CPython (load tests) share the unix one.
try:
    import esp32  # noqa: F401
except ImportError:
    esp32 = None

if esp32 is not None:
    from firmware.hal_esp32 import Board  # noqa: F401
else:
    from firmware.hal_unix import Board  # noqa: F401
