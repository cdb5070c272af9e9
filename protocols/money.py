# Money as the protocol carries it: integer micro-currency, prices in micro-currency per kWh,
# energy in Wh. One rounding rule for every host, so the gateway's settlement, the simulator's
# household-alone bill and any auditor's recomputation agree to the micro-unit.


def amount(wh, price):
    """Wh x micro-currency/kWh -> micro-currency, rounded half up (exact integers: no float)."""
    return (2 * wh * price + 1000) // 2000


def split(total, weights):
    """``total`` in integer parts proportional to non-negative integer ``weights`` that add up
    to exactly ``total`` (largest remainder, Hamilton's method; ties to the earlier weight).
    All weights zero: equal parts."""
    n = len(weights)
    if n == 0:
        return []
    if any(w < 0 for w in weights):
        raise ValueError("weights must not be negative")
    if not any(weights):
        weights = [1] * n
    s = sum(weights)
    sign = -1 if total < 0 else 1
    t = total * sign
    parts = [t * w // s for w in weights]
    order = sorted(range(n), key=lambda i: (-(t * weights[i] % s), i))
    for i in order[:t - sum(parts)]:
        parts[i] += 1
    return [p * sign for p in parts]
