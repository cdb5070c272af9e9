# Stand-in for the ESP32 port's frozen `ntptime` (micropython-lib): a blocking SNTP query. The
# firmware does not use it (it blocks the loop; firmware/hal_esp32.py speaks SNTP itself on a
# non-blocking socket); present so code written for the port imports as on the board.
host = "pool.ntp.org"
timeout = 1


def settime():
    raise OSError("ntptime blocks the event loop: not used by the firmware")
