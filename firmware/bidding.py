# Bidding agent: forecast the next interval's net position and turn the owner's preferences
# into a bid curve (protocol v1: non-decreasing marginal price of net export q, q > 0 sells).
#
# Integer arithmetic only: energies in Wh, prices in micro-currency per kWh.


class Forecaster:
    """Exponential smoothing of the metered net export per interval,
    f <- f + alpha (x - f) with alpha = num/den, in integers (rounded half away from zero)."""

    def __init__(self, num=1, den=3):
        self.num = num
        self.den = den
        self.value = None

    def update(self, net_wh):
        if self.value is None:
            self.value = net_wh
            return self.value
        step = (net_wh - self.value) * self.num
        half = self.den // 2
        if step >= 0:
            self.value += (step + half) // self.den
        else:
            self.value -= (-step + half) // self.den
        return self.value


def battery_price(prefs, soc_pct):
    """Opportunity cost of battery energy: high when empty (keep it), low when full."""
    soc = 0 if soc_pct < 0 else (100 if soc_pct > 100 else soc_pct)
    empty = prefs["battery_price_empty"]
    full = prefs["battery_price_full"]
    return empty + (full - empty) * soc // 100


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
    return min(charge, max(cap - stored, 0)), min(discharge, max(stored - floor, 0))


def curve(forecast_wh, prefs, soc_pct, charge_wh, discharge_wh):
    """Bid curve [[q_wh, price], ...].

    What the meter offers, as steps of net export by price:
    - inflexible position F (forecast): an import need is bought at any price up to
      import_wtp (above it the load would rather be shed); a PV surplus is sold at any price
      from pv_price up (below it, curtail);
    - the battery: at prices below its opportunity cost it charges (buys charge_wh more), at
      and above it it discharges (sells discharge_wh).
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
        base -= charge_wh
        steps.append((battery_price(prefs, soc_pct), charge_wh + discharge_wh))
    steps.sort()
    q = base
    points = []
    for price, add in steps:
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
