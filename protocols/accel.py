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


def json_parser(reference):
    """canonical.parse on C json: a body is accepted here only when the reference accepts it
    too, with the same value (it is printable ASCII without escapes or literals, parses without
    floats or constants, and re-encodes to itself); any other body goes to ``reference``, so
    rejections and their codes are the reference's own."""

    def parse(body):
        if (type(body) is bytes and body and _NOT_PLAIN.search(body) is None
                and b"true" not in body and b"false" not in body and b"null" not in body):
            try:
                value = _loads(body.decode())
                if dump(value) == body:
                    return value
            except Exception:  # noqa: BLE001 - whatever went wrong, the reference decides
                pass
        return reference(body)

    return parse
