"""Host-side fast paths of the protocol codec for the gateway's hot loop.

``protocols.messages`` is written for MicroPython too: pure-Python HMAC and a canonical-JSON
check that re-encodes every body by hand. On the gateway, at thousands of readings a second,
that is most of the cost of ingest. These functions use CPython's C implementations (``hmac``,
``json``) and give the same answers:

* ``decode`` verifies the tag first (RFC 2104 HMAC-SHA256 with a constant-time compare), then
  accepts a body only if it is printable ASCII, parses with JSON floats and constants refused,
  re-serialises to exactly the same bytes, and passes ``messages.validate`` -- every body it
  accepts, ``messages.decode`` accepts with the same result. Anything it would reject is handed
  to ``messages.decode`` itself, so rejection codes are exactly the protocol's.
* ``ack`` builds the same bytes as ``messages.encode(messages.ack(...), key)``.

tests/gateway/test_wire.py checks both claims against the reference on generated inputs.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable
from typing import Any

from protocols import messages, topics
from protocols.errors import ProtocolError

KeyLookup = Callable[[str, int], "bytes | None"]
_dumps = json.JSONEncoder(separators=(",", ":"), sort_keys=True, ensure_ascii=True, allow_nan=False).encode


_NOT_PRINTABLE = re.compile(rb"[^\x20-\x7e]")
# The tag trailer exactly as protocols.messages frames it: key id 0-99999 without leading
# zeros, a colon, 64 lowercase hex digits.
_TRAILER = re.compile(rb"(0|[1-9][0-9]{0,4}):([0-9a-f]{64})")


def _refuse(text: str) -> Any:
    raise ValueError(text)


_loads = json.JSONDecoder(parse_float=_refuse, parse_constant=_refuse).decode


def tag(key: bytes, body: bytes) -> bytes:
    return hmac.digest(key, body, "sha256")


def decode(topic: str, payload: bytes, keys: KeyLookup) -> tuple[str, Any, dict[str, Any], bytes]:
    """Same contract as ``messages.decode``: (community, subject, msg, body) or ProtocolError."""
    community, kind, subject = topics.parse(topic)
    if type(payload) is not bytes or len(payload) > messages.MAX_PAYLOAD or kind not in messages.TAGGED:
        return messages.decode(topic, payload, keys)
    cut = payload.rfind(b"\n")
    trailer = _TRAILER.fullmatch(payload, cut + 1) if cut >= 0 else None
    if trailer is None:  # the reference names what is wrong with the framing
        return messages.decode(topic, payload, keys)
    body, kid, received = payload[:cut], int(trailer[1]), bytes.fromhex(trailer[2].decode())
    key = keys(subject, kid)
    if key is None:
        raise ProtocolError("unknown_key", "no key " + str(kid) + " for this meter")
    if not hmac.compare_digest(tag(key, body), received):
        raise ProtocolError("bad_tag", "tag does not match the body")
    try:
        if not body or _NOT_PRINTABLE.search(body):
            raise ValueError("not printable ASCII")
        msg = _loads(body.decode())
        if type(msg) is not dict or _dumps(msg).encode() != body or messages.validate(msg) != kind:
            raise ValueError("not canonical or not this kind")
        if msg["meter"] != subject or msg["kid"] != kid:
            raise ValueError("topic mismatch")
    except Exception:  # noqa: BLE001 - authentic but invalid: the reference decoder names why
        return messages.decode(topic, payload, keys)
    return community, subject, msg, body


def ack(meter: str, kid: int, boot: int, seq: int, res: str, key: bytes) -> bytes:
    """The tagged ack payload for a reading that was just verified (all fields already valid)."""
    # Canonical JSON by hand: keys in sorted order, and every value an int or an id that needs
    # no escaping (the caller took them from a validated reading).
    body = b'{"boot":%d,"kid":%d,"meter":"%s","res":"%s","seq":%d,"type":"ack","v":%d}' % (
        boot, kid, meter.encode(), res.encode(), seq, messages.VERSION)
    return body + b"\n" + str(kid).encode() + b":" + tag(key, body).hex().encode()
