# Canonical JSON: the one byte string each message has.
#
# A subset of RFC 8785 (JSON Canonicalization Scheme) that needs no escaping and no floats:
# objects with keys sorted, no white space, integers only, strings of printable ASCII without
# '"' or '\'. Both runtimes produce the same bytes from the same values (MicroPython dicts are
# unordered, so key order must come from sorting, not insertion). Receivers re-encode what they
# parsed and reject a body that differs, so one message has exactly one encoding.
import json

from protocols.errors import ProtocolError


def text_ok(s):
    for ch in s:
        o = ord(ch)
        if o < 0x20 or o > 0x7E or ch == '"' or ch == "\\":
            return False
    return True


def _encode_into(value, out):
    t = type(value)
    if t is int:
        out.append(str(value))
    elif t is str:
        if not text_ok(value):
            raise ProtocolError("bad_field", "string needs escaping")
        out.append('"')
        out.append(value)
        out.append('"')
    elif t is list or t is tuple:
        out.append("[")
        for i in range(len(value)):
            if i:
                out.append(",")
            _encode_into(value[i], out)
        out.append("]")
    elif t is dict:
        out.append("{")
        first = True
        for key in sorted(value):
            if type(key) is not str:
                raise ProtocolError("bad_field", "object key is not a string")
            if not first:
                out.append(",")
            first = False
            _encode_into(key, out)
            out.append(":")
            _encode_into(value[key], out)
        out.append("}")
    else:
        raise ProtocolError("bad_field", "not an int, string, list or object")


def encode(value):
    out = []
    _encode_into(value, out)
    return "".join(out).encode()


def _no_constant(name):
    raise ValueError(name)


# CPython's json accepts NaN and Infinity; MicroPython's does not, and takes no keywords.
try:
    json.loads("0", parse_constant=_no_constant)
    _STRICT = {"parse_constant": _no_constant}
except TypeError:
    _STRICT = {}


def parse(body):
    """Parse bytes that must be canonical JSON exactly (see above). Any other input, including
    JSON one runtime's parser tolerates and the other's does not, is ProtocolError("bad_json"),
    so both runtimes reject the same bodies with the same code."""
    if len(body) == 0 or min(body) < 0x20 or max(body) > 0x7E:
        raise ProtocolError("bad_json", "body is not printable ASCII")
    try:
        value = json.loads(bytes(body).decode(), **_STRICT)
        same = encode(value) == body
    except Exception:  # noqa: BLE001 - parsers and deep nesting raise different types
        raise ProtocolError("bad_json", "not valid JSON")
    if not same:
        raise ProtocolError("bad_json", "not in canonical form")
    return value
