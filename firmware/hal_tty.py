# A serial tty link for the unix hal (a USB RS-485 adapter, or a pty pair in tests).
# Part of the unix hardware layer; a separate module so TCP-only runs do not load it.
import asyncio


class TtyLink:
    """A serial tty (USB RS-485 adapter, or a pty in tests), raw, non-blocking reads polled."""

    def __init__(self, path, baud, ticks_ms, ticks_diff):
        import termios
        self._ticks_ms = ticks_ms
        self._ticks_diff = ticks_diff
        self.path = path
        self.baud = baud
        self._f = None
        self._termios = termios

    def _open(self):
        if self._f is not None:
            return
        f = open(self.path, "r+b", buffering=0)
        t = self._termios
        fd = f.fileno()
        attrs = t.tcgetattr(fd)
        speed = getattr(t, "B" + str(self.baud))
        # Raw 8N1: no echo, no line editing, no CR/LF translation; VMIN = VTIME = 0 makes
        # read() return at once with whatever arrived, so the event loop never blocks.
        attrs[0] = 0
        attrs[1] = 0
        attrs[2] = (attrs[2] & ~0o60) | 0o60 | 0o200 | 0o4000  # CS8 | CREAD | CLOCAL
        attrs[3] = 0
        attrs[4] = speed
        attrs[5] = speed
        cc = list(attrs[6])
        cc[5] = 0 if type(cc[5]) is int else b"\x00"  # VTIME
        cc[6] = 0 if type(cc[6]) is int else b"\x00"  # VMIN
        attrs[6] = cc
        t.tcsetattr(fd, t.TCSANOW, attrs)
        self._f = f

    def close(self):
        f = self._f
        self._f = None
        if f is not None:
            try:
                f.close()
            except Exception:  # noqa: BLE001
                pass

    async def send(self, frame):
        try:
            self._open()
            self._f.write(frame)
        except Exception:
            self.close()
            raise OSError("tty send failed")

    async def recv(self, n, timeout_ms):
        if self._f is None:
            raise OSError("link closed")
        start = self._ticks_ms()
        while True:
            try:
                data = self._f.read(n)
            except Exception:
                self.close()
                raise OSError("tty read failed")
            if data:
                return data
            if self._ticks_diff(self._ticks_ms(), start) >= timeout_ms:
                return b""
            await asyncio.sleep(0.002)

    def discard(self):
        if self._f is not None:
            try:
                while self._f.read(256):
                    pass
            except Exception:  # noqa: BLE001
                self.close()
