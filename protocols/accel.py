# CPython accelerations of protocols/auth.py and protocols/canonical.py: the C implementations
# of HMAC and JSON behind the same contracts. auth and canonical import this module only when
# they do not run on MicroPython, so a board never loads it (nor could: MicroPython has no hmac).
# tests/test_protocols.py checks every function here against the pure version it replaces.
import hmac
import json
import re

equal = hmac.compare_digest


def hmac_sha256(key, msg):
    return hmac.digest(key, msg, "sha256")


def _refuse(text):
    raise ValueError(text)


_loads = json.JSONDecoder(parse_float=_refuse, parse_constant=_refuse).decode
# Canonical output for values of the canonical types: sorted keys, no white space, and
# (ensure_ascii) no byte outside ASCII.
dump_text = json.JSONEncoder(separators=(",", ":"), sort_keys=True).encode


def dump(value):
    return dump_text(value).encode()


# What the fast parser leaves to the reference: bytes outside printable ASCII, backslashes
# (escapes: the only way a parsed string could hold '"', '\' or a control character) and the
# literals true, false and null (canonical JSON has none, but C json would re-encode them).
_UNSURE = re.compile(rb"[^\x20-\x5b\x5d-\x7e]|true|false|null")


def json_parser(reference):
    """canonical.parse on C json: a body is accepted here only when the reference accepts it
    too, with the same value (it is printable ASCII without escapes or literals, parses without
    floats or constants, and re-encodes to itself); any other body goes to ``reference``, so
    rejections and their codes are the reference's own."""

    def parse(body):
        if type(body) is bytes and body and _UNSURE.search(body) is None:
            try:
                value = _loads(body.decode())
                if dump(value) == body:
                    return value
            except Exception:  # noqa: BLE001 - whatever went wrong, the reference decides
                pass
        return reference(body)

    return parse
