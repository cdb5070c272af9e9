# Awards from the gateway: verified, kept until their interval, applied only inside it.
#
# An award for interval iv is the net export q_wh the market gave this meter at the community
# price. The battery is the flexible part: its setpoint is the awarded position minus the
# forecast of the rest of the household, converted to a power over the interval and clamped to
# the inverter's limits. The price is kept with the award: the agent learns the community's
# price profile from it (firmware/bidding.py). A peer-to-peer award has no community price
# (0): the meter's price is that of its largest trade (the message lists them largest first:
# the grid's tariff when it buys from or sells to the grid), 0 when it trades nothing.
# An award that arrives after its interval has ended is never applied (counted award_late);
# an interval without an award falls back to self-consumption.
from protocols import const, meterlink
from protocols.errors import ProtocolError

_KEEP = const(3)  # awards held ahead: the next intervals only, so memory stays bounded


class AwardBook:
    def __init__(self, meter, kid, key, interval_s, counters):
        self.meter = meter
        self.kid = kid
        self.key = key
        self.interval_s = interval_s
        self.c = counters
        for k in ("awards", "award_bad", "award_late"):
            self.c.setdefault(k, 0)
        self.pending = {}   # iv -> (q_wh, price)

    def _keys(self, meter, kid):
        return self.key if meter == self.meter and kid == self.kid else None

    def receive(self, topic, payload, now_ms):
        """Verify (tag before parse) and file an award; returns its iv or None."""
        try:
            _c, _m, msg, _b = meterlink.decode(topic, payload, self._keys)
        except ProtocolError:
            self.c["award_bad"] += 1
            return None
        iv = msg["iv"]
        if (iv + 1) * self.interval_s * 1000 <= now_ms:
            self.c["award_late"] += 1
            return None
        self.c["awards"] += 1
        t = msg["trades"]
        self.pending[iv] = (msg["q_wh"], msg["price"] or (t[0][2] if t else 0))
        while len(self.pending) > _KEEP:
            del self.pending[min(self.pending)]
        return iv

    def take(self, iv):
        """The award (q_wh, price) for interval ``iv`` (removed), or None; drops awards of
        past intervals."""
        for old in list(self.pending):
            if old < iv:
                del self.pending[old]
        return self.pending.pop(iv, None)
