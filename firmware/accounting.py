# Interval accounting in integer Wh.
#
# Every good meter read adds the counter increase since the previous good read to the open
# interval. Counters must be monotonic: a decrease (meter reset, replacement, glitch) sets
# FLAG_COUNTER_RESET, adds nothing, and the new value becomes the baseline; energy is never
# negative and never invented (the unseen energy between the last read before the reset and
# the reset itself is lost, and the flag says so).
#
# Consecutive records chain: each interval starts from the counters and time the previous one
# ended with, so the sum of the records is the counters' total increase.
#
# Boundaries: the meter has no latch at the market boundary, so the counters at the boundary
# are interpolated linearly between the last read before it and the first read after it, when
# those are close together (a quarter interval); the record then covers exactly its interval
# (t0, t1 on the boundaries) and every meter of the community, the feeder's too, measures the
# same span. Otherwise a record's t0/t1 are the times of real reads: if the meter was offline
# at a boundary, t1 is the last good read (older than the boundary, FLAG_METER_OFFLINE) and the
# rest rolls into the next record, so a stale value is never presented as a fresh one.
from protocols import meterlink

MS = 1000


class Accountant:
    def __init__(self, interval_s):
        self.interval_s = interval_s
        self.iv = None
        self.last_imp = None     # counters (Wh) and time (ms) of the last good read
        self.last_exp = None
        self.last_ms = None
        self.prev_imp = None     # the good read before the last one, for interpolation
        self.prev_exp = None
        self.prev_ms = None
        self.t0_ms = None        # time of the read the open interval started from
        self.acc_imp = 0
        self.acc_exp = 0
        self.flags = 0

    def restore(self, iv_now, imp, exp, t_ms, closed_iv):
        """Continue from the persisted baseline after a boot. The first interval after a boot
        was not watched throughout: it is PARTIAL."""
        self.iv = iv_now
        self.last_imp = imp
        self.last_exp = exp
        self.last_ms = t_ms
        self.t0_ms = t_ms
        self.flags = meterlink.FLAG_PARTIAL
        if imp is None:
            self.flags |= meterlink.FLAG_METER_OFFLINE

    def observe(self, imp, exp, t_ms):
        """A good read of both counters (integer Wh) at time ``t_ms``."""
        if self.last_imp is None:
            # First read ever: it is the baseline, nothing to add yet.
            self.last_imp = imp
            self.last_exp = exp
            self.last_ms = t_ms
            if self.t0_ms is None:
                self.t0_ms = t_ms
            return
        d_imp = imp - self.last_imp
        d_exp = exp - self.last_exp
        self.prev_imp = self.last_imp
        self.prev_exp = self.last_exp
        self.prev_ms = self.last_ms
        if d_imp < 0 or d_exp < 0:
            self.flags |= meterlink.FLAG_COUNTER_RESET
            self.prev_ms = None  # no interpolation across a reset
        if d_imp > 0:
            self.acc_imp += d_imp
        if d_exp > 0:
            self.acc_exp += d_exp
        self.last_imp = imp
        self.last_exp = exp
        self.last_ms = t_ms

    def missed(self):
        """A poll of the meter failed during the open interval."""
        self.flags |= meterlink.FLAG_METER_OFFLINE

    def _to_boundary(self):
        """Move the last read back to the open interval's end, by linear interpolation between
        the reads either side of it; the part after the boundary goes to the next interval."""
        if self.iv is None or self.prev_ms is None or self.last_ms is None:
            return
        end = (self.iv + 1) * self.interval_s * MS
        span = self.last_ms - self.prev_ms
        if not (self.prev_ms <= end <= self.last_ms) or span <= 0 or span > self.interval_s * MS // 4:
            return
        b_imp = self.prev_imp + (self.last_imp - self.prev_imp) * (end - self.prev_ms) // span
        b_exp = self.prev_exp + (self.last_exp - self.prev_exp) * (end - self.prev_ms) // span
        self.acc_imp -= self.last_imp - b_imp
        self.acc_exp -= self.last_exp - b_exp
        self.last_imp, self.last_exp, self.last_ms = b_imp, b_exp, end
        self.prev_ms = None

    def close(self, next_iv, now_ms):
        """Fields of the reading for the open interval; opens ``next_iv`` from the last read
        (interpolated to the boundary where possible)."""
        self._to_boundary()
        t0 = self.t0_ms if self.t0_ms is not None else now_ms
        t1 = self.last_ms if self.last_ms is not None else t0
        if t1 < t0:
            t1 = t0
        if self.last_imp is None:
            self.flags |= meterlink.FLAG_METER_OFFLINE
        if self.iv is not None and (t0 != self.iv * self.interval_s * MS or
                                    t1 != (self.iv + 1) * self.interval_s * MS):
            # Not both ends on the boundaries (device down, meter offline at a boundary, reads
            # too far apart to interpolate): the record is not exactly this interval's energy.
            self.flags |= meterlink.FLAG_PARTIAL
        rec = {
            "iv": self.iv, "t0": t0 // MS, "t1": t1 // MS,
            "imp_wh": min(self.acc_imp, meterlink.MAX_INTERVAL_WH),
            "exp_wh": min(self.acc_exp, meterlink.MAX_INTERVAL_WH),
            "cnt_imp_wh": self.last_imp if self.last_imp is not None else 0,
            "cnt_exp_wh": self.last_exp if self.last_exp is not None else 0,
            "flags": self.flags,
        }
        self.iv = next_iv
        self.t0_ms = self.last_ms
        self.acc_imp = 0
        self.acc_exp = 0
        self.flags = 0
        return rec
