# CPython accelerations of protocols/auth.py and protocols/canonical.py: the C implementations
# of HMAC and JSON behind the same contracts. auth and canonical import this module only when
# they do not run on MicroPython, so a board never loads it (nor could: MicroPython has no hmac).
# tests/test_protocols.py checks every function here against the pure version it replaces.
import hashlib
import hmac
import json
import re

equal = hmac.compare_digest


def _refuse(text):
    raise ValueError(text)

# HMAC state after absorbing each key (RFC 2104's inner and outer pads), copied per message: a
# gateway verifies and acks every reading under the same few thousand meter keys.
_KEYED = {}
_MAX_KEYS = 4096


def hmac_sha256(key, msg):
    if type(key) is not bytes:
        key = bytes(key)
    keyed = _KEYED.get(key)
    if keyed is None:
        if len(_KEYED) >= _MAX_KEYS:
            _KEYED.clear()
        keyed = _KEYED[key] = hmac.new(key, digestmod=hashlib.sha256)
    h = keyed.copy()
    h.update(msg)
    return h.digest()


_loads = json.JSONDecoder(parse_float=_refuse, parse_constant=_refuse).decode
# Canonical output for values of the canonical types: sorted keys, no white space, and
# (ensure_ascii) no byte outside ASCII.
dump_text = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode
# The C encoder JSONEncoder.encode sets up on every call, set up once (json.encoder's own
# accelerator; absent, the encoder above does the same).
_c_encoder = json.encoder.c_make_encoder
if _c_encoder is not None:
    _chunks = _c_encoder(None, _refuse, json.encoder.encode_basestring_ascii, None, ":", ",", True,
                         False, False)

    def dump_text(value):  # noqa: F811
        return "".join(_chunks(value, 0))


def dump(value):
    return dump_text(value).encode()


# What the fast parser leaves to the reference: bytes outside printable ASCII, backslashes
# (escapes: the only way a parsed string could hold '"', '\' or a control character) and the
# literals true, false and null (canonical JSON has none, but C json would re-encode them).
_NOT_PLAIN = re.compile(rb"[^\x20-\x5b\x5d-\x7e]")


def _json_loads(body):
    return _loads(body.decode())  # refuses non-integer numbers (parse_float)


# JSON engines for the fast parser, (loads, dump): C json, and orjson where it is installed
# (the gateway's dependencies include it: its pumps parse every reading, and orjson does the
# round trip in a third of the time). Only bodies that are printable ASCII without escapes
# reach an engine, and for those both dump exactly the canonical form. Each loads refuses
# numbers with a fraction or an exponent, as the reference does.
ENGINES = {"json": (_json_loads, dump)}
try:
    import orjson

    # RFC 8259 section 6: a number with a fraction or an exponent has a digit right before its
    # '.', 'e' or 'E' (a string may too, and is then merely left to the slower path).
    _NOT_INTEGER = re.compile(rb"[.eE](?<=[0-9][.eE])")

    def _orjson_loads(body):
        if _NOT_INTEGER.search(body) is not None:
            raise ValueError("a number that is not an integer")
        return orjson.loads(body)

    def _orjson_dump(value):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)

    ENGINES["orjson"] = (_orjson_loads, _orjson_dump)
except ImportError:
    pass
FASTEST = ENGINES.get("orjson") or ENGINES["json"]


def json_parser(reference, engine=FASTEST):
    """canonical.parse through a C JSON engine: a body is accepted here only when the reference
    accepts it too, with the same value (it is printable ASCII without escapes, literals or
    non-integer numbers, and re-encodes to itself); any other body goes to ``reference``, so
    rejections and their codes are the reference's own."""
    loads, dump_value = engine

    def parse(body):
        if (type(body) is bytes and body and _NOT_PLAIN.search(body) is None
                and b"true" not in body and b"false" not in body and b"null" not in body):
            try:
                value = loads(body)
                if dump_value(value) == body:
                    return value
            except Exception:  # noqa: BLE001 - whatever went wrong, the reference decides
                pass
        return reference(body)

    return parse
