# Bidding agent: forecast the household's net position over the next day, value the battery's
# stored energy from that forecast and turn it into a bid curve (protocol v1: non-decreasing
# marginal price of net export q, q > 0 sells).
#
# Integer arithmetic only: energies in Wh, prices in micro-currency per kWh, efficiencies per
# mille. MicroPython's name pool is nearly full (tests/firmware/test_memory.py), so the names
# here are ones the interpreter or the firmware already holds (value, update, get, data, price,
# count, step, size, lo, hi, ...) and the settings are dict keys longer than ten characters,
# which are no pool names.
from array import array

from protocols import const

_SLOT_S = const(900)  # profile resolution: finer intervals share a 15-minute slot (96 a day)


class Agent:
    """Forecast of the household's metered non-battery net export and of the community price,
    per slot of the day. The profile is the same slot on the days before (an exponential
    average over days, weight 1/2 on the newest), shifted by the recent error against it
    (exponentially smoothed, weight 1/2, fading with the lead time); the forecast n intervals
    ahead blends it with the last observation (persistence) at weights n : 4, so the next
    interval leans on what was just metered and the hours ahead on the daily shape. Measured
    on the simulated households (tests/firmware/test_bidding.py) it is as good as persistence
    one interval ahead and far better from two on. Before a day of history: persistence.

    data[k]: net export of slot k (Wh per interval); price[k]: the award's price of slot k
    (0: none seen); value: the last observation; last: the recent error against the profile;
    count: intervals observed; step: intervals per slot; size: slots per day."""

    def __init__(self, interval_s):
        self.interval_s = interval_s
        self.step = max(1, _SLOT_S // interval_s)
        self.size = max(1, 86400 // (interval_s * self.step))
        self.data = array("i", bytes(4 * self.size))
        self.price = array("i", bytes(4 * self.size))
        self.value = None
        self.last = 0
        self.count = 0
        self.end = None   # the award price of the interval being followed (None: no award)
        self.fill = None  # (iv, forecast) of the last bid, for apply_award

    def index(self, iv):
        return (iv // self.step) % self.size

    def update(self, iv, q):
        """Observe interval ``iv``'s net export ``q`` (Wh) and the price it was awarded at."""
        k = self.index(iv)
        self.value = q
        if self.count >= self.size * self.step:
            self.last += (q - self.data[k] - self.last + 1) >> 1
            self.data[k] += (q - self.data[k] + 1) >> 1
        else:
            self.data[k] = q
        p = self.end
        if p is not None:
            self.price[k] = p if not self.price[k] else self.price[k] + ((p - self.price[k]) >> 1)
        self.count += 1

    def get(self, iv, n=1):
        """Forecast of interval ``iv``'s net export (Wh), ``n`` >= 1 intervals after the last
        observation: the recent error fades over about two hours (8 slots of 15 minutes)."""
        if self.count < self.size * self.step:
            return self.value or 0
        m = self.step
        f = self.data[self.index(iv)] + self.last * 8 * m // (8 * m + n)
        return (4 * m * self.value + n * f) // (4 * m + n)

    def plan(self, iv, s, prefs):
        """(lo, hi, q): the bid buys (charges) only below lo and sells (discharges) only at hi
        and above, from the value of a stored Wh over the next day; q > 0 buys at most q Wh
        (AC) at lo, what the battery lacks to cover its deficit ahead; the rest is offered at
        the feed-in and the import price.

        Walk the battery (state and limits ``s``) in self-consumption over the next day of
        slots on the forecast. If it runs empty while the household still imports, a stored
        Wh would have saved import there: it is worth the forecast price there x eta_d. In AC
        terms selling one Wh costs 1/eta_d stored Wh, so hi = value / eta_d; buying one stores
        eta_c, so lo = value x eta_c, and hi / lo = 1 / (eta_c eta_d): never a charge and a
        discharge across a spread smaller than the losses, and never a charge at the import
        price (lo < the highest price there is).

        If it fills and spills first, or neither happens within the day, it bids the safe
        rule (feed-in, import). Selling what would spill at its value (feed-in / eta_c eta_d)
        sold it to batteries expecting to run short, whose lo is up to import x eta_c eta_d:
        one battery charging from another's discharge, 15 kWh a day for ten households on the
        second day (bench/battery_agent.py), where the perfect-foresight optimum moves none
        for the same saving. The room is made at the import price instead, when the community
        imports, and the spill is taken by a battery that lacks energy when it comes, at the
        feed-in price."""
        imp = prefs["import_price"]
        feed = prefs["feed_in_price"]
        ec = prefs.get("eta_charge_pm", 950)
        ed = prefs.get("eta_discharge_pm", 950)
        n = self.step  # intervals per slot
        if self.count < self.size * n:
            # No day of history: community self-consumption. It charges from a surplus the
            # grid would buy at the feed-in price and discharges into a deficit it would sell
            # at the import price, like every other battery, so no two work against each other.
            return feed, imp, 0
        cap = s["capacity_wh"]
        stored = cap * s["soc_pct"] // 100
        floor = cap * s.get("min_soc_pct", 0) // 100
        top = cap * s.get("max_soc_pct", 100) // 100
        charge = s["max_charge_w"] * self.interval_s * n // 3600
        discharge = s["max_discharge_w"] * self.interval_s * n // 3600
        iv -= iv % n
        short = 0   # stored Wh it lacks once empty, until the next surplus
        p = 0       # the price where it first runs empty (0: not yet)
        for j in range(self.size):
            f = self.get(iv + j * n, j * n + 2) * n
            if f >= 0:
                if short:
                    break
                stored += min(f, charge) * ec // 1000
                if stored > top:
                    return feed, imp, 0  # it spills first
            else:
                need = min(-f * 1000 // ed, discharge)
                if need > stored - floor:
                    short += need - (stored - floor)
                    stored = floor
                    p = p or (self.price[self.index(iv + j * n)] or imp)
                else:
                    stored -= need
        if not p:
            return feed, imp, 0
        # Never below the feed-in price: at it the community's surplus would be exported.
        lo = max(p * ec * ed // 1000000, feed)
        return lo, max(p, lo * 1000000 // (ec * ed)), short * 1000 // ec


def battery_energy(limits, soc_pct, interval_s):
    """(charge_wh, discharge_wh) the battery can move in one interval within its power limits
    and its stored energy; (0, 0) without a battery."""
    if limits is None:
        return 0, 0
    cap = limits["capacity_wh"]
    stored = cap * soc_pct // 100
    charge = limits["max_charge_w"] * interval_s // 3600
    discharge = limits["max_discharge_w"] * interval_s // 3600
    floor = cap * limits.get("min_soc_pct", 0) // 100
    top = cap * limits.get("max_soc_pct", 100) // 100
    return min(charge, max(top - stored, 0)), min(discharge, max(stored - floor, 0))


def curve(forecast_wh, prefs, charge_wh, discharge_wh, lo, hi, q=0):
    """Bid curve [[q_wh, price], ...].

    What the meter offers, as steps of net export by price:
    - inflexible position F (forecast): an import need is bought at any price up to
      import_wtp (above it the load would rather be shed); a PV surplus is sold at any price
      from pv_price up (below it, curtail);
    - the battery (Agent.plan's lo < hi, q) is idle from lo to hi; below lo it charges, q Wh
      if q > 0 (only while the household has a surplus: charging while it imports would
      take what a neighbour's battery discharges, churn through both conversion losses), and
      all it can from the feed-in price down; it discharges all it can from the import price
      (or hi above it) up. At those two grid prices the market gives the batteries, members
      first, what brings the community's grid exchange closest to zero
      (gateway/market/uniform.py): community self-consumption, with no battery charging while
      another discharges. The meter follows the award at its connection point (the inverter's
      grid target, firmware/app.py), so the battery also absorbs the forecast's error.
    """
    steps = []  # (price, quantity added to net export when the price reaches it)
    if forecast_wh < 0:
        base = forecast_wh
        steps.append((prefs["import_wtp"], -forecast_wh))
    else:
        base = 0
        if forecast_wh > 0:
            steps.append((prefs["pv_price"], forecast_wh))
    if charge_wh or discharge_wh:
        # The battery's net export, level by level as the price rises (non-decreasing).
        low = -min(q, charge_wh) if q > 0 and forecast_wh >= 0 else 0
        base -= charge_wh
        steps.append((min(prefs["feed_in_price"], lo), low + charge_wh))
        steps.append((lo, -low))
        steps.append((max(prefs["import_price"], hi), discharge_wh))
    steps.sort()
    q = base
    points = []
    for price, add in steps:
        if not add:
            continue
        points.append([q, price])
        q += add
        points.append([q, price])
    if not points:
        points.append([0, prefs["pv_price"]])
    # Merge repeated points (two steps at one price).
    out = [points[0]]
    for p in points[1:]:
        if p != out[-1]:
            out.append(p)
    return out
