# Remote configuration messages, protocol v1 (issue 13): a command to one meter (change safe
# settings, rotate its key, factory reset) and the meter's answer. Read by `tmeter fw config`,
# `fw rotate-key` and `fw factory-reset` (tmeter/fwtools/remote.py) and by a meter only while it
# handles a command (firmware/remote.py imports this module when one arrives, unloads it after):
# nothing here is resident on a meter.
#
# Topics, outside tm/v1/<c>/meters/ like the OTA ones (protocols/ota.py):
#   tm/v1/<community>/cfg/<meter>/down   tool -> meter: a command
#   tm/v1/<community>/cfg/<meter>/up     meter -> tool: its answer
#
# A command is canonical JSON {"v", "type": "cfg", "meter", "n", "op", ...} tagged
# (protocols/trailer.py) with the meter's *current* key: only who holds the meter's key (the
# gateway's database) can command it. ``n`` must exceed the last n the meter accepted (kept on
# its flash, a factory reset included): a replayed command is refused. ``op``:
#   "set"     ``set``: {name: int} of safe settings (SETTINGS), all applied or none
#   "rotate"  ``kid``: the new key id (above the current one), ``key``: the new 32-byte key
#             encrypted under the current key, as 64 hex digits: XOR with the keystream
#             HMAC-SHA256(key, "tmeter-rotate" "\n" n "\n" counter) (RFC 2104 as a PRF, one
#             32-byte block, counter 0), then the tag over the body holding the ciphertext
#             (encrypt-then-MAC). n is never reused for a meter, so neither is the keystream.
#   "reset"   factory reset: the settings and rotated key go, the provisioned ones return
# The answer {"v", "type": "cfg_res", "meter", "n", "ok": 0|1, "reason", "kid", "last"} is tagged
# with the key the meter signs with once it acted (the new one after a rotation, the current one
# before a reset); ``reason`` is the ProtocolError code of a refusal ("" when ok); ``kid``: the
# key id it signs with from now on (after a reset: the provisioned one, config.json's);
# ``last``: the last n it accepted (a tool whose n was refused as replayed starts above it).
from binascii import hexlify, unhexlify

from protocols import auth, canonical, const, downlink, trailer
from protocols.errors import ProtocolError
from protocols.meterlink import VERSION

MAX_CFG_PAYLOAD = const(1024)
MAX_N = const(2 ** 48)     # the tools use milliseconds since 1970: room for 8,000 years
MAX_SETTINGS = const(16)
OPS = ("set", "rotate", "reset")
_PRICE = (0, 10 ** 8)      # micro-currency per kWh: up to 100 a kWh
# The settings a command may change, with their ranges: what a meter reads while it runs
# (firmware/app.py reads each again every time) and no identity. A section's key is dotted.
SETTINGS = {
    "poll_s": (1, 3600), "status_s": (2, 3600), "ack_timeout_s": (2, 3600),
    "ntp_s": (60, 86400), "ota_trial_s": (60, 86400),
    "prefs.pv_price": _PRICE, "prefs.import_wtp": _PRICE, "prefs.battery_price_empty": _PRICE,
    "prefs.battery_price_full": _PRICE, "prefs.import_price": _PRICE,
    "prefs.feed_in_price": _PRICE,
}
# Known keys of the device config (protocols/devconfig.py) no command may change: who the meter
# is, its keys and logins, and what must match the gateway or is fixed at boot.
FIXED = ("meter", "community", "kid", "key", "interval_s", "gate_closure_s", "release_key",
         "release_kid", "mqtt", "wifi", "ntp_host", "modbus", "clock", "queue_max",
         "send_window", "wdt_s", "heap_log", "max_intervals")
_T_CMD = "cfg"
_T_RES = "cfg_res"
_N = ("int", 1, MAX_N)
_KID = ("int", 0, 0xFFFF)


def topic(community, meter, kind):
    """tm/v1/<community>/cfg/<meter>/<kind>, kind "down" or "up"."""
    return downlink.topic("cfg", community, meter, kind)


def check_setting(name, value):
    """ProtocolError unless ``name`` may be set remotely and ``value`` is in its range."""
    if type(name) is not str:
        raise ProtocolError("bad_field", "a setting's name is a string")
    lim = SETTINGS.get(name)
    if lim is None:
        if name.split(".")[0] in FIXED:
            raise ProtocolError("not_allowed", name[:40] + " cannot be set remotely")
        raise ProtocolError("unknown_setting", name[:40])
    if type(value) is not int:
        raise ProtocolError("bad_field", name + " takes an integer")
    if not lim[0] <= value <= lim[1]:
        raise ProtocolError("out_of_range", "%s: %d not in %d..%d" % (name, value, lim[0], lim[1]))


def check_settings(d):
    if type(d) is not dict or not 0 < len(d) <= MAX_SETTINGS:
        raise ProtocolError("bad_field", "set takes 1 to 16 settings")
    for name in d:
        check_setting(name, d[name])


def _fields(op):
    f = {"type": None, "meter": ("id", 0, 0), "n": _N, "op": ("enum", OPS, 0)}
    if op == "set":
        f["set"] = None
    elif op == "rotate":
        f["kid"] = _KID
        f["key"] = ("text", 64, 64)
    return f


def validate(msg):
    """Check a command's schema and limits."""
    op = msg.get("op") if type(msg) is dict else None
    downlink.check_fields(msg, _fields(op if op in OPS else "reset"))
    if msg["type"] != _T_CMD:
        raise ProtocolError("bad_type", "not a cfg command")
    if op == "set":
        check_settings(msg["set"])


def keystream(key, n):
    """The 32 bytes that encrypt a rotated key of command ``n`` under ``key``."""
    return auth.hmac_sha256(key, ("tmeter-rotate\n%d\n0" % n).encode())


def _xor(a, b):
    out = bytearray(a)
    for i in range(len(out)):
        out[i] ^= b[i]
    return bytes(out)


def command(meter, n, op, **fields):
    """A command dict; ``fields``: set={...} for "set"; for "rotate" use rotate() instead."""
    msg = {"v": VERSION, "type": _T_CMD, "meter": meter, "n": n, "op": op}
    msg.update(fields)
    return msg


def rotate(meter, n, key, new_kid, new_key):
    """The rotate command carrying ``new_key`` encrypted under the current ``key``."""
    if len(new_key) != auth.TAG_LEN:
        raise ProtocolError("bad_field", "a meter key is 32 bytes")
    return command(meter, n, "rotate", kid=new_kid,
                   key=hexlify(_xor(new_key, keystream(key, n))).decode())


def encode(msg, kid, key):
    """The payload: the canonical command tagged with the meter's current key ``kid``."""
    validate(msg)
    return trailer.encode(canonical.dump(msg), kid, key)


def decode(payload, meter, kid, key, last):
    """Verify, then parse a command for ``meter`` holding key ``kid``/``key`` whose last
    accepted n is ``last``: the tag before the body, then schema, meter and n. Returns the
    command; a rotate's "key" decrypted to bytes. Raises ProtocolError and nothing else."""
    body = downlink.tagged_body(payload, MAX_CFG_PAYLOAD, lambda k: key if k == kid else None)[0]
    msg = canonical.parse(body)
    validate(msg)
    if msg["meter"] != meter:
        raise ProtocolError("wrong_meter", "a command for another meter")
    if msg["n"] <= last:
        raise ProtocolError("replayed", "n %d is not above %d" % (msg["n"], last))
    if msg["op"] == "rotate":
        if msg["kid"] <= kid:
            raise ProtocolError("out_of_range", "new key id %d not above %d" % (msg["kid"], kid))
        try:
            ct = unhexlify(msg["key"])
        except Exception:  # noqa: BLE001 - binascii.Error on CPython, ValueError on MicroPython
            ct = b""
        if len(ct) != auth.TAG_LEN or hexlify(ct).decode() != msg["key"]:
            raise ProtocolError("bad_field", "key is 64 lowercase hex digits")
        msg["key"] = _xor(ct, keystream(key, msg["n"]))
    return msg


def answer(meter, n, ok, reason, kid, last):
    return {"v": VERSION, "type": _T_RES, "meter": meter, "n": n, "ok": ok, "reason": reason,
            "kid": kid, "last": last}


def _answer_fields():
    return {"type": None, "meter": ("id", 0, 0), "n": ("int", 0, MAX_N), "ok": ("int", 0, 1),
            "reason": ("text", 0, 32), "kid": _KID, "last": ("int", 0, MAX_N)}


def encode_answer(msg, kid, key):
    return trailer.encode(canonical.dump(msg), kid, key)


def decode_answer(payload, meter, keys):
    """Verify and parse a meter's answer; ``keys``: {kid: key} the meter may sign with."""
    msg = canonical.parse(downlink.tagged_body(payload, MAX_CFG_PAYLOAD, keys.get)[0])
    downlink.check_fields(msg, _answer_fields())
    if msg["type"] != _T_RES or msg["meter"] != meter:
        raise ProtocolError("topic_mismatch", "not this meter's answer")
    return msg
