# Protocol v1 messages, the full set: the meter link (protocols/meterlink.py: reading, bid, status,
# ack, award, and the ledger checkpoint's schema, which meters witness; all a meter loads) and the
# messages the gateway publishes to everyone (market result, gateway status, ledger checkpoint),
# with their constructors and interval arithmetic.
# The gateway, the simulator and the tests use this module; its names include all of meterlink.
from protocols.meterlink import (  # noqa: F401 - re-exported: this module is the whole protocol
    ACK_DUPLICATE, ACK_STORED, ALL_FLAGS, FLAG_COUNTER_RESET, FLAG_METER_OFFLINE, FLAG_PARTIAL,
    FLAG_QUEUE_OVERFLOW, FLAG_TIME_UNSYNCED, MAX_BID_WH, MAX_COUNT, MAX_COUNTER_WH, MAX_COUNTERS,
    MAX_CURVE_POINTS, MAX_INTERVAL_WH, MAX_PAYLOAD, MAX_PRICE, MAX_TIME, MAX_TRADES, MECHANISMS,
    SCHEMAS, TAGGED, U16, U32, VERSION, _message, bid, decode, encode, reading, status, validate)

MAX_MONEY = 10 ** 15
_MONEY = ("int", -MAX_MONEY, MAX_MONEY)
# Fields checked exactly like the meter link's: the award's interval, mechanism and price, the
# status's time, flag and counters, a u32 count.
_AWARD = SCHEMAS["award"]
_STATUS = SCHEMAS["status"]
_U32 = SCHEMAS["status"]["n"]

SCHEMAS.update({
    "result": {
        "iv": _AWARD["iv"], "mech": _AWARD["mech"], "price": _AWARD["price"], "bids": _U32,
        "traded_wh": ("int", 0, MAX_BID_WH * 1000), "grid_import_wh": ("int", 0, MAX_BID_WH * 1000),
        "grid_export_wh": ("int", 0, MAX_BID_WH * 1000), "community_cost": _MONEY,
        "bau_cost": _MONEY,
    },
    "gateway_status": {"ts": _STATUS["ts"], "online": _STATUS["online"], "iv": _AWARD["iv"],
                       "c": _STATUS["c"]},
})


def ack(meter, kid, boot, seq, res):
    return _message("ack", {"meter": meter, "kid": kid, "boot": boot, "seq": seq, "res": res})


def award(meter, kid, iv, ts, mech, q_wh, price, trades):
    return _message("award", {"meter": meter, "kid": kid, "iv": iv, "ts": ts, "mech": mech,
                              "q_wh": q_wh, "price": price, "trades": trades})


def result(iv, mech, price, bids, traded_wh, grid_import_wh, grid_export_wh, community_cost, bau_cost):
    return _message("result", {
        "iv": iv, "mech": mech, "price": price, "bids": bids, "traded_wh": traded_wh,
        "grid_import_wh": grid_import_wh, "grid_export_wh": grid_export_wh,
        "community_cost": community_cost, "bau_cost": bau_cost,
    })


def gateway_status(ts, online, iv, counters):
    return _message("gateway_status", {"ts": ts, "online": online, "iv": iv, "c": counters})


def checkpoint(origin, size, root, note):
    return _message("checkpoint", {"origin": origin, "size": size, "root": root, "note": note})


def interval_index(t, interval_s=900):
    """iv = floor(unix_time / interval_s), the market interval containing time t."""
    return int(t) // interval_s


def interval_start(iv, interval_s=900):
    return iv * interval_s
