# The tag trailer of protocol v1 (protocols/meterlink.py): a message between a meter and the
# gateway carries, after its canonical JSON body, the key id and the HMAC-SHA256 tag (RFC 2104,
# protocols/auth.py) of the exact body bytes:
#
#     <body> "\n" <kid decimal> ":" <64 lowercase hex>
#
# The key id sits outside the body so a receiver can pick the key (keys rotate) and verify the
# tag before it parses anything. There is one spelling only: a key id with leading zeros, a tag
# in upper case or of another length is a malformed trailer (bad_frame), so a payload is either
# byte for byte what encode() made or damaged. The meter's outbox (firmware/outbox.py) checks
# its queued records with signed(), the gateway's decoder splits with split(): both refuse the
# same payloads.
from binascii import hexlify, unhexlify

from protocols import auth
from protocols.errors import ProtocolError


def encode(body, kid, key):
    """``body`` followed by its trailer for key id ``kid``, tagged with ``key``."""
    tag = hexlify(auth.hmac_sha256(key, body))
    return b"".join((body, b"\n", str(kid).encode(), b":", tag))  # one copy of the body


def split(payload, size=auth.TAG_LEN):
    """(body, kid, tag) of a tagged payload: the tag as 32 bytes, not yet checked against any
    key. Raises ProtocolError("bad_frame") unless the trailer is in the one spelling above.
    ``size``: the bytes after the colon; the meter's signature line (protocols/signature.py)
    has 64, spelled the same way. (No function of its own for the line: on MicroPython its
    name would be one more name of a booted meter.)"""
    cut = payload.rfind(b"\n")
    if cut < 0:
        raise ProtocolError("bad_frame", "missing tag trailer")
    trailer = payload[cut + 1:]
    colon = trailer.find(b":")
    kid_text = trailer[:colon]
    tag_hex = trailer[colon + 1:]
    # A key id is a u16: one to five digits.
    if colon < 1 or colon > 5 or len(tag_hex) != 2 * size:
        raise ProtocolError("bad_frame", "malformed tag trailer")
    for c in kid_text:
        if c < 0x30 or c > 0x39:
            raise ProtocolError("bad_frame", "malformed key id")
    if len(kid_text) > 1 and kid_text[0] == 0x30:
        raise ProtocolError("bad_frame", "key id has leading zeros")
    try:
        tag = unhexlify(tag_hex)
    except Exception:  # noqa: BLE001 - binascii.Error on CPython, ValueError on MicroPython
        tag = None
    # unhexlify also takes upper case: the round trip admits 64 lowercase hex digits only.
    if tag is None or hexlify(tag) != tag_hex:
        raise ProtocolError("bad_frame", "tag is not lowercase hex")
    return payload[:cut], int(kid_text), tag


def signed(payload, kid, key):
    """Whether ``payload`` is what encode(body, kid, key) made of its body: a well-formed
    trailer naming key id ``kid`` and a tag that matches ``key``."""
    try:
        body, got_kid, tag = split(payload)
    except ProtocolError:
        return False
    return got_kid == kid and auth.equal(auth.hmac_sha256(key, body), tag)
