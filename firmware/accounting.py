# Interval accounting in integer Wh.
#
# Every good meter read adds the counter increase since the previous good read to the open
# interval. Counters must be monotonic: a decrease (meter reset, replacement, glitch) sets
# FLAG_COUNTER_RESET, adds nothing, and the new value becomes the baseline; energy is never
# negative and never invented (the unseen energy between the last read before the reset and
# the reset itself is lost, and the flag says so).
#
# Consecutive records chain: each interval starts from the counters and time the previous one
# ended with, so the sum of the records is the counters' total increase. A record's t0/t1 are
# the times of those two reads: if the meter was offline at a boundary, t1 is the last good
# read (older than the boundary, FLAG_METER_OFFLINE) and the rest rolls into the next record,
# so a stale value is never presented as a fresh one.
from protocols import messages

MS = 1000


class Accountant:
    def __init__(self, interval_s):
        self.interval_s = interval_s
        self.iv = None
        self.last_imp = None     # counters (Wh) and time (ms) of the last good read
        self.last_exp = None
        self.last_ms = None
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
        self.flags = messages.FLAG_PARTIAL
        if imp is None:
            self.flags |= messages.FLAG_METER_OFFLINE

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
        if d_imp < 0 or d_exp < 0:
            self.flags |= messages.FLAG_COUNTER_RESET
        if d_imp > 0:
            self.acc_imp += d_imp
        if d_exp > 0:
            self.acc_exp += d_exp
        self.last_imp = imp
        self.last_exp = exp
        self.last_ms = t_ms

    def missed(self):
        """A poll of the meter failed during the open interval."""
        self.flags |= messages.FLAG_METER_OFFLINE

    def close(self, next_iv, now_ms):
        """Fields of the reading for the open interval; opens ``next_iv`` from the last read."""
        t0 = self.t0_ms if self.t0_ms is not None else now_ms
        t1 = self.last_ms if self.last_ms is not None else t0
        if t1 < t0:
            t1 = t0
        if self.last_imp is None:
            self.flags |= messages.FLAG_METER_OFFLINE
        if self.iv is not None and t0 < (self.iv * self.interval_s - self.interval_s // 10) * MS:
            # The baseline read is older than this interval (device down, or meter offline at
            # the previous boundary): the record does not describe this interval alone.
            self.flags |= messages.FLAG_PARTIAL
        rec = {
            "iv": self.iv, "t0": t0 // MS, "t1": t1 // MS,
            "imp_wh": min(self.acc_imp, messages.MAX_INTERVAL_WH),
            "exp_wh": min(self.acc_exp, messages.MAX_INTERVAL_WH),
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
