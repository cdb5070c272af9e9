# Stand-in for the ESP32 port's `network` (ports/esp32/network_wlan.c): one STA interface whose
# link the test scripts through the file esp32_wlan in the board's folder ("down": the access
# point is gone). As on the port, connect() starts the driver's own reconnect loop (reconnects
# forever by default): status() is STAT_CONNECTING while the link is down after a connect, and
# STAT_GOT_IP once it is up; each connect() call is logged ("WLAN connect") so a test counts them.
from _port import state

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201


class WLAN:
    def __init__(self, interface=STA_IF):
        self._active = False
        self._requested = False

    def active(self, on=None):
        if on is not None:
            self._active = bool(on)
        return self._active

    def connect(self, ssid=None, key=None, **kw):
        if not self._active:
            raise OSError("Wifi Not Started")
        print("WLAN connect")
        self._requested = True

    def disconnect(self):
        self._requested = False

    def _up(self):
        return self._active and self._requested and state("wlan", "up") != "down"

    def isconnected(self):
        return self._up()

    def status(self, param=None):
        if self._up():
            return STAT_GOT_IP
        return STAT_CONNECTING if self._requested else STAT_IDLE

    def ifconfig(self, *a):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
