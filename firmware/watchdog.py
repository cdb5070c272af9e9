# Watchdog fed only while the main loop makes progress.
#
# The main loop calls progress() after every poll and interval close. The feeder checks, every
# quarter of the timeout, that progress happened since its last look, and only then feeds the
# hardware watchdog. A loop stuck in a Modbus transaction or a coroutine that never yields thus
# resets the board; an MQTT outage does not (the loop keeps metering and queueing).


class LoopWatchdog:
    def __init__(self, board, timeout_ms, counters):
        self.board = board
        self.timeout_ms = timeout_ms
        self.c = counters
        self.c.setdefault("wdt_stall", 0)
        self._progress = 0
        self._seen = -1
        self._wdt = board.watchdog(timeout_ms)

    def progress(self):
        self._progress += 1

    async def run(self):
        while True:
            await self.board.sleep_ms(self.timeout_ms // 4)
            if self._progress != self._seen:
                self._seen = self._progress
                self._wdt.feed()
            else:
                self.c["wdt_stall"] += 1
                expired = getattr(self._wdt, "expired", None)
                # A software watchdog (unix hal) cannot reset by itself: reset on its behalf.
                if expired is not None and expired():
                    self.board.log("watchdog: main loop stalled, resetting")
                    self.board.reset()
