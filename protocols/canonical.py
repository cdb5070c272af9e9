# Canonical JSON: the one byte string each message has.
#
# A subset of RFC 8785 (JSON Canonicalization Scheme) that needs no escaping and no floats:
# objects with keys sorted, no white space, integers only, strings of printable ASCII without
# '"' or '\'. Both runtimes produce the same bytes from the same values (MicroPython dicts are
# unordered, so key order must come from sorting, not insertion). Receivers re-encode what they
# parsed and reject a body that differs, so one message has exactly one encoding.
#
# On CPython, parse and dump use the C json module (protocols/accel.py, never loaded on
# MicroPython) with exactly the same results; parse_py is the reference they are tested against.
import io
import json
import sys

from protocols.errors import ProtocolError


# Printable ASCII without '"' and '\\'.
TEXT_CHARS = (" !#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[]^_`"
              "abcdefghijklmnopqrstuvwxyz{|}~")


def text_ok(s):
    # strip() leaves nothing exactly when every character is allowed. (A loop over the
    # characters would make each distinct one a qstr on MicroPython, kept for good.)
    return not s.strip(TEXT_CHARS)


def _write(value, w):
    # Straight into one growing buffer: allocates a few hundred bytes per message on
    # MicroPython, where a list of pieces or a string per level costs several kilobytes.
    t = type(value)
    if t is int:
        w(str(value))
    elif t is str:
        if not text_ok(value):
            raise ProtocolError("bad_field", "string needs escaping")
        w('"')
        w(value)
        w('"')
    elif t is list or t is tuple:
        w("[")
        for i in range(len(value)):
            if i:
                w(",")
            _write(value[i], w)
        w("]")
    elif t is dict:
        for key in value:
            if type(key) is not str:
                raise ProtocolError("bad_field", "object key is not a string")
        w("{")
        first = True
        for key in sorted(value):
            if not first:
                w(",")
            first = False
            _write(key, w)
            w(":")
            _write(value[key], w)
        w("}")
    else:
        raise ProtocolError("bad_field", "not an int, string, list or object")


def encode(value):
    """The canonical bytes of ``value``; ProtocolError("bad_field") if it has none."""
    out = io.StringIO()
    _write(value, out.write)
    return out.getvalue().encode()


def parse_py(body):
    """Parse bytes that must be canonical JSON exactly (see above). Any other input, including
    JSON one runtime's parser tolerates and the other's does not, is ProtocolError("bad_json"),
    so both runtimes reject the same bodies with the same code."""
    if len(body) == 0 or min(body) < 0x20 or max(body) > 0x7E:
        raise ProtocolError("bad_json", "body is not printable ASCII")
    try:
        # CPython's parser takes NaN and Infinity where MicroPython's fails: either way no float
        # has a canonical encoding, so both end here.
        value = json.loads(bytes(body).decode())
        same = encode(value) == body
    except Exception:  # noqa: BLE001 - parsers and deep nesting raise different types
        raise ProtocolError("bad_json", "not valid JSON")
    if not same:
        raise ProtocolError("bad_json", "not in canonical form")
    return value


# dump(value): encode() for a value already known to hold only str-keyed dicts, lists, ints
# and text_ok strings (every message that passed messages.validate does), without the checks
# on CPython.
parse = parse_py
dump = encode
if sys.implementation.name != "micropython":
    from protocols.accel import dump, json_parser  # noqa: F811
    parse = json_parser(parse_py)
