# What the tool-to-meter messages outside tm/v1/<c>/meters/ share (protocols/ota.py,
# protocols/remote.py): their topics, the check of a tagged payload before it is parsed, and the
# field check of a parsed body. Like them, never resident on a meter: firmware/ota.py and
# firmware/remote.py import it with their protocol module and unload it after.
from protocols import auth, trailer
from protocols.errors import ProtocolError
from protocols.meterlink import VERSION, _check_field

KINDS = ("down", "up")


def topic(area, community, meter, kind):
    """tm/v1/<community>/<area>/<meter>/<kind>, kind "down" or "up"."""
    if kind not in KINDS:
        raise ProtocolError("bad_topic", "unknown %s topic kind" % area)
    _check_field("community", community, ("id", 0, 0))
    _check_field("meter", meter, ("id", 0, 0))
    return "tm/v1/%s/%s/%s/%s" % (community, area, meter, kind)


def as_bytes(payload):
    if type(payload) is bytes:
        return payload
    try:
        return bytes(payload)
    except Exception:  # noqa: BLE001 - any non-bytes object is a bad frame
        raise ProtocolError("bad_frame", "payload is not bytes")


def tagged_body(payload, limit, keys):
    """(body, kid) of a payload of at most ``limit`` bytes whose tag verifies under
    ``keys(kid)`` (the key, or None when unknown): checked before anything is parsed."""
    payload = as_bytes(payload)
    if len(payload) > limit:
        raise ProtocolError("too_large", "payload exceeds %d bytes" % limit)
    body, kid, tag = trailer.split(payload)
    key = keys(kid)
    if key is None:
        raise ProtocolError("unknown_key", "no key %d" % kid)
    if not auth.equal(auth.hmac_sha256(key, body), tag):
        raise ProtocolError("bad_tag", "tag does not match the body")
    return body, kid


def check_fields(msg, names):
    """Version 1, no field but ``names`` (and "v"), each present and of its spec (None: any)."""
    if type(msg) is not dict or msg.get("v") != VERSION or type(msg.get("v")) is not int:
        raise ProtocolError("bad_version", "unsupported protocol version")
    for name in msg:
        if name != "v" and name not in names:
            raise ProtocolError("unknown_field", str(name)[:32])
    for name in names:
        if name not in msg:
            raise ProtocolError("missing_field", name)
        if names[name] is not None:
            _check_field(name, msg[name], names[name])
