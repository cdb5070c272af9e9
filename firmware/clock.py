# The simulator's shared clock: sim_time = start + (real_time - epoch) * speed.
#
# Device, simulator and gateway all derive time from the same triple, so an accelerated run
# keeps them in step. Floats appear only here, in the conversion of real time (MicroPython
# unix and CPython floats are 64-bit); callers get integer milliseconds.


class SimClock:
    def __init__(self, real_ms, start=None, epoch=None, speed=1):
        # real_ms: function returning the host's unix time in integer milliseconds.
        self._real_ms = real_ms
        self.speed = speed if speed else 1
        now = real_ms()
        if start is None:
            # "null = real time": with speed 1 this is the host clock; with another speed the
            # run starts now and then goes faster or slower.
            start_ms = now
            epoch_ms = now
        else:
            start_ms = int(start * 1000)
            epoch_ms = now if epoch is None else int(epoch * 1000)
        self._start_ms = start_ms
        self._epoch_ms = epoch_ms

    def now_ms(self):
        elapsed = self._real_ms() - self._epoch_ms
        if self.speed == 1:
            return self._start_ms + elapsed
        return self._start_ms + int(elapsed * self.speed)

    def real_delay_ms(self, sim_ms):
        """Real milliseconds that ``sim_ms`` of simulated time take (rounded up, >= 0)."""
        if sim_ms <= 0:
            return 0
        if self.speed == 1:
            return sim_ms
        return int(sim_ms / self.speed) + 1
