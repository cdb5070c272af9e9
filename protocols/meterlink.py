# Protocol v1 between a meter and the gateway: the five tagged message types (reading, bid,
# status from the meter; ack, award from the gateway) and the ledger checkpoint a meter
# witnesses, their schemas, the constructors of what a meter sends, encoding with HMAC tags, and
# the decoder. This is all a meter loads;
# protocols/messages.py is the full protocol (the same names plus what the gateway publishes to
# everyone), for the gateway, the simulator and the tests.
#
# A payload is the canonical JSON body (protocols/canonical.py); messages between a meter and
# the gateway carry the tag trailer of protocols/trailer.py after it:
#
#     <body> "\n" <kid decimal> ":" <64 lowercase hex>
#
# Units are integers: energy Wh, power W, prices micro-currency per kWh, money micro-currency,
# times unix seconds.
from protocols import auth, canonical, const, topics, trailer
from protocols.errors import ProtocolError

VERSION = const(1)
MAX_PAYLOAD = const(4096)
MAX_CURVE_POINTS = const(16)
MAX_TRADES = const(64)
MAX_COUNTERS = const(32)

U16 = const(0xFFFF)
U32 = const(0xFFFFFFFF)
MAX_TIME = const(1 << 40)
MAX_INTERVAL_WH = const(10 ** 9)
MAX_COUNTER_WH = const(10 ** 15)
MAX_BID_WH = const(10 ** 8)
MAX_PRICE = const(10 ** 9)
MAX_COUNT = const(1 << 53)

# Reading status and error flags.
FLAG_TIME_UNSYNCED = const(1)  # clock not NTP-synchronised: timestamps are the device's guess
FLAG_METER_OFFLINE = const(2)  # the meter did not answer for part of the interval
FLAG_COUNTER_RESET = const(4)  # a counter went backwards (reset, replaced): energy not invented
FLAG_QUEUE_OVERFLOW = const(8)  # older records were dropped from the full store-and-forward queue
FLAG_PARTIAL = const(16)  # the interval was not observed from start to end (boot, outage)
ALL_FLAGS = const(31)

ACK_STORED = "stored"
ACK_DUPLICATE = "duplicate"
MECHANISMS = const(("uniform", "p2p"))

TAGGED = ("reading", "bid", "status", "ack", "award")

# Field specs: (kind, lo, hi). Kinds: int, id, text (hi = max length), enum (lo = choices),
# curve, trades, counters. Private consts: on MicroPython they cost no names (messages.py
# takes the ones it shares from the schemas below).
_T = const(("int", 0, MAX_TIME))
_ID = const(("id", 0, 0))
_KID = const(("int", 0, U16))
_U32 = const(("int", 0, U32))
_WH = const(("int", 0, MAX_INTERVAL_WH))
_BIT = const(("int", 0, 1))
_PRICE = const(("int", -MAX_PRICE, MAX_PRICE))
_MECH = const(("enum", MECHANISMS, 0))
_COUNTERS = const(("counters", 0, MAX_COUNT))

# The schemas of every message type this module can validate; protocols/messages.py adds the
# gateway's public ones.
SCHEMAS = {
    "reading": {
        "meter": _ID, "kid": _KID, "boot": _U32, "seq": _U32, "iv": _T, "t0": _T, "t1": _T,
        "imp_wh": _WH, "exp_wh": _WH, "cnt_imp_wh": ("int", 0, MAX_COUNTER_WH),
        "cnt_exp_wh": ("int", 0, MAX_COUNTER_WH), "flags": ("int", 0, ALL_FLAGS),
    },
    "bid": {
        "meter": _ID, "kid": _KID, "boot": _U32, "n": _U32, "iv": _T, "ts": _T,
        "curve": ("curve", -MAX_BID_WH, MAX_BID_WH),
    },
    "status": {
        "meter": _ID, "kid": _KID, "boot": _U32, "n": _U32, "ts": _T, "online": _BIT,
        "time_ok": _BIT, "c": _COUNTERS,
        # The meter's witness of the ledger: the size and root of the largest checkpoint it saw,
        # each checked as the checkpoint's own field (kind "cp": lo names them).
        "cp": ("cp", ("size", "root"), 0),
    },
    "ack": {"meter": _ID, "kid": _KID, "boot": _U32, "seq": _U32, "res": _ID},
    "award": {
        "meter": _ID, "kid": _KID, "iv": _T, "ts": _T, "mech": _MECH,
        "q_wh": ("int", -MAX_BID_WH, MAX_BID_WH), "price": _PRICE,
        "trades": ("trades", -MAX_BID_WH, MAX_BID_WH),
    },
    # Untagged: the gateway signs the note (C2SP tlog-checkpoint) with a key meters do not hold.
    # root: base64 of the RFC 6962 tree head (44 characters for SHA-256).
    "checkpoint": {
        "origin": ("text", 1, 128), "size": ("int", 0, MAX_COUNT), "root": ("text", 1, 64),
        "note": ("text", 1, 2048),
    },
}


def _check_int(value, lo, hi, name):
    if type(value) is not int:
        raise ProtocolError("bad_field", name + " is not an integer")
    if value < lo or value > hi:
        raise ProtocolError("out_of_range", name)


def _check_curve(value, lo, hi):
    # Argument names are names on MicroPython too: ``value`` is one the firmware has already.
    if type(value) is not list or not 0 < len(value) <= MAX_CURVE_POINTS:
        raise ProtocolError("bad_curve", "curve needs 1 to 16 points")
    last_q = last_p = None
    for point in value:
        if type(point) is not list or len(point) != 2:
            raise ProtocolError("bad_curve", "a point is [q_wh, price]")
        _check_int(point[0], lo, hi, "curve q_wh")
        _check_int(point[1], -MAX_PRICE, MAX_PRICE, "curve price")
        if last_q is not None and (point[0] < last_q or point[1] < last_p):
            raise ProtocolError("bad_curve", "marginal price curve must be non-decreasing")
        last_q, last_p = point


def _check_trades(trades, lo, hi):
    if type(trades) is not list or len(trades) > MAX_TRADES:
        raise ProtocolError("bad_field", "trades must be a list of at most 64")
    for trade in trades:
        if type(trade) is not list or len(trade) != 3 or not topics.valid_id(trade[0]):
            raise ProtocolError("bad_field", "a trade is [peer, q_wh, price]")
        _check_int(trade[1], lo, hi, "trade q_wh")
        _check_int(trade[2], -MAX_PRICE, MAX_PRICE, "trade price")


def _check_counters(counters, hi):
    if type(counters) is not dict or len(counters) > MAX_COUNTERS:
        raise ProtocolError("bad_field", "counters must be an object of at most 32")
    for name in counters:
        if not topics.valid_id(name):
            raise ProtocolError("bad_field", "counter name")
        _check_int(counters[name], 0, hi, "counter " + name)


def _check_field(name, value, spec):
    kind, lo, hi = spec
    if kind == "int":
        _check_int(value, lo, hi, name)
    elif kind == "id":
        if not topics.valid_id(value):
            raise ProtocolError("bad_field", name + " is not a valid id")
    elif kind == "text":
        if type(value) is not str or not lo <= len(value) <= hi or not canonical.text_ok(value):
            raise ProtocolError("bad_field", name + " is not valid text")
    elif kind == "enum":
        if value not in lo or type(value) is not str:
            raise ProtocolError("bad_field", name + " has an unknown value")
    elif kind == "curve":
        _check_curve(value, lo, hi)
    elif kind == "trades":
        _check_trades(value, lo, hi)
    elif kind == "cp":  # inline: a function of its own would cost the device a name
        if type(value) is not dict or len(value) != len(lo):
            raise ProtocolError("bad_field", "cp must hold a checkpoint's size and root")
        for field in lo:
            if field not in value:
                raise ProtocolError("missing_field", field)
            _check_field(field, value[field], SCHEMAS["checkpoint"][field])
    else:
        _check_counters(value, hi)


def validate(msg):
    """Check a message against its schema; returns its type. Raises ProtocolError."""
    if type(msg) is not dict:
        raise ProtocolError("bad_json", "body is not an object")
    if msg.get("v") != VERSION or type(msg.get("v")) is not int:
        raise ProtocolError("bad_version", "unsupported protocol version")
    kind = msg.get("type")
    schema = SCHEMAS.get(kind) if type(kind) is str else None
    if schema is None:
        raise ProtocolError("bad_type", "unknown message type")
    for name in msg:
        if type(name) is not str:
            raise ProtocolError("bad_field", "object key is not a string")
        if name != "v" and name != "type" and name not in schema:
            raise ProtocolError("unknown_field", name[:32])
    for name in schema:
        if name not in msg:
            raise ProtocolError("missing_field", name)
        _check_field(name, msg[name], schema[name])
    if kind == "reading" and msg["t1"] < msg["t0"]:
        raise ProtocolError("out_of_range", "t1 before t0")
    return kind


def _message(kind, fields):
    fields["v"] = VERSION
    fields["type"] = kind
    return fields


def reading(meter, kid, boot, seq, iv, t0, t1, imp_wh, exp_wh, cnt_imp_wh, cnt_exp_wh, flags):
    return _message("reading", {
        "meter": meter, "kid": kid, "boot": boot, "seq": seq, "iv": iv, "t0": t0, "t1": t1,
        "imp_wh": imp_wh, "exp_wh": exp_wh, "cnt_imp_wh": cnt_imp_wh, "cnt_exp_wh": cnt_exp_wh,
        "flags": flags,
    })


def bid(meter, kid, boot, n, iv, ts, curve):
    """``curve``: [[q_wh, price], ...] marginal price of net export q (q > 0 sells)."""
    return _message("bid", {"meter": meter, "kid": kid, "boot": boot, "n": n, "iv": iv, "ts": ts,
                            "curve": curve})


def status(meter, kid, boot, n, ts, online, time_ok, counters, cp=None):
    """``cp``: {"size", "root"} of the largest checkpoint the meter saw; None: it saw none, and
    says so as the empty tree (size 0, root the hash of nothing: RFC 6962 2.1), which any log
    extends."""
    if cp is None:
        cp = {"size": 0, "root": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}
    return _message("status", {"meter": meter, "kid": kid, "boot": boot, "n": n, "ts": ts,
                               "online": online, "time_ok": time_ok, "c": counters, "cp": cp})


def encode(msg, key=None):
    """Payload bytes of a valid message; tagged types need the sender's ``key``."""
    kind = validate(msg)
    body = canonical.dump(msg)  # validate() checked every value's type
    if len(body) > MAX_PAYLOAD - 80:
        raise ProtocolError("too_large", "message body too large")
    if kind not in TAGGED:
        return body
    if key is None:
        raise ProtocolError("unknown_key", "a %s must be tagged" % kind)
    return trailer.encode(body, msg["kid"], key)


def decode(topic, payload, keys=None):
    """Verify and parse one received payload. Returns (community, subject, msg, body):
    subject as in topics.parse, msg the validated dict, body the exact bytes the tag covers.

    ``keys(meter, kid)`` returns the key bytes for a tagged message, or None when unknown.
    Raises ProtocolError and nothing else, whatever ``topic`` and ``payload`` are.
    """
    community, kind, subject = topics.parse(topic)
    if type(payload) is not bytes:
        try:
            payload = bytes(payload)
        except Exception:  # noqa: BLE001 - any non-bytes object is a bad frame
            raise ProtocolError("bad_frame", "payload is not bytes")
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError("too_large", "payload exceeds %d bytes" % MAX_PAYLOAD)
    kid = None
    body = payload
    if kind in TAGGED:
        body, kid, tag = trailer.split(payload)
        key = keys(subject, kid) if keys is not None else None
        if key is None:
            raise ProtocolError("unknown_key", "no key %d for this meter" % kid)
        if not auth.equal(auth.hmac_sha256(key, body), tag):
            raise ProtocolError("bad_tag", "tag does not match the body")
    msg = canonical.parse(body)
    if validate(msg) != kind:
        raise ProtocolError("topic_mismatch", "message type differs from the topic")
    if kid is not None and (msg["meter"] != subject or msg["kid"] != kid):
        raise ProtocolError("topic_mismatch", "meter or key id differs from topic and trailer")
    if kind == "result" and msg["iv"] != subject:
        raise ProtocolError("topic_mismatch", "interval differs from the topic")
    return community, subject, msg, body
