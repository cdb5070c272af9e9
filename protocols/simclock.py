# The simulated clock of a run:  sim = start + (wall - epoch) * speed
#
# Every process of a simulated run (the simulated devices, the firmware, the gateway, the
# harness) is given the same triple (start, epoch, speed) and computes the time itself, so
# nothing is exchanged at run time and an accelerated day stays in step across processes.
# ``start`` is the simulated time at wall time ``epoch``. Unset values (None) default so that
# processes given the same triple agree wherever they can:
#
#   epoch unset: the wall time when the clock is made (only this one differs between processes,
#                so a run that spans processes sets it);
#   start unset: the epoch, i.e. the clock shows the wall time at the epoch and runs from there
#                at ``speed``;
#   speed unset: 1, the wall clock's pace. A speed must be positive.
#
# All three unset: the wall clock. The arithmetic is unit-agnostic: times in any one unit (the
# firmware's integer milliseconds, the hosts' float seconds), speed a plain factor. The classes
# built on this one: firmware/hal_unix.py (Board.now_ms), sim_hardware/simulator/clock.py,
# gateway/clock.py.


class SimClock:
    def __init__(self, start, epoch, speed, t):
        """The clock of the triple, made at wall time ``t`` (in the unit of the others)."""
        if speed is None:
            speed = 1
        elif not speed > 0:
            raise ValueError("clock speed must be positive")
        self.epoch = t if epoch is None else epoch
        self.start = self.epoch if start is None else start
        self.speed = speed

    def at_wall(self, t):
        """Simulated time at wall time ``t``."""
        return self.start + (t - self.epoch) * self.speed
