# Over-the-air update messages, protocol v1 (issue 13), the tool's side: the offer and the file
# list it signs, the chunks that answer a meter's requests, the topics. Used by `tmeter fw ota`
# (tmeter/fwtools/ota.py) and the vectors; never loaded on a meter, whose side (decoding what
# this module encodes) is protocols/ota.py, where the formats are described. Every offer and
# list made here is checked by the meter's own decoders before it is returned, so the tool
# cannot sign what a meter would refuse.
import hashlib
import io
from binascii import b2a_base64, hexlify

from protocols import canonical, ota, trailer
from protocols.downlink import KINDS, as_bytes, check_fields
from protocols.downlink import topic as downlink_topic
from protocols.errors import ProtocolError
from protocols.meterlink import VERSION, _check_field


def topic(community, meter, kind):
    """tm/v1/<community>/ota/<meter>/<kind>, kind "down" or "up"."""
    return downlink_topic("ota", community, meter, kind)


def parse_topic(t):
    """(community, meter, kind) of an ota topic; ProtocolError("bad_topic") otherwise."""
    parts = t.split("/") if type(t) is str else ()
    if len(parts) != 6 or parts[0] != "tm" or parts[1] != "v1" or parts[3] != "ota" \
            or parts[5] not in KINDS:
        raise ProtocolError("bad_topic", "not an ota topic")
    try:
        _check_field("meter", parts[4], ("id", 0, 0))
    except ProtocolError:
        raise ProtocolError("bad_topic", "invalid meter id")
    return parts[2], parts[4], parts[5]


def file_list(files):
    """The file list (bytes) of ``files``: [[path, size, sha256 hex], ...] sorted by path."""
    return b"".join(("%s %d %s\n" % (p, n, h)).encode() for p, n, h in files)


def offer(version, target, rkid, listing):
    """The offer of a release whose file list is ``listing`` (count and size read from it;
    ProtocolError if it is no valid list)."""
    count = listing.count(b"\n")
    size = 0
    for raw in listing.split(b"\n")[:count]:
        parts = raw.split(b" ")
        size += int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else 0
    msg = {"v": VERSION, "type": "ota_offer", "version": version, "target": target,
           "rkid": rkid, "files": count, "size": size, "lsize": len(listing),
           "lsha": sha256_hex(listing)}
    check(msg, listing)
    return msg


def check(msg, listing):
    """The meter's checks of a file list against an offer (protocols/ota.py entries())."""
    return list(ota.entries(io.BytesIO(listing), msg))


def encode_offer(msg, key):
    """The offer payload: the canonical offer tagged with the release key, checked as a
    meter decodes it."""
    payload = trailer.encode(canonical.dump(msg), msg["rkid"], key)
    ota.decode_offer(payload, msg["rkid"], key)
    return payload


def decode_request(payload):
    """A meter's chunk request (protocols/ota.py request()), schema-checked."""
    payload = as_bytes(payload)
    if len(payload) > 512:
        raise ProtocolError("too_large", "request too large")
    msg = canonical.parse(payload)
    check_fields(msg, {"type": None, "meter": ("id", 0, 0), "version": ("int", 1, 999999),
                       "file": ("int", 0, 64), "off": ("int", 0, 196608),
                       "n": ("int", 1, ota.MAX_CHUNK)})
    if msg["type"] != "ota_get":
        raise ProtocolError("bad_type", "not a chunk request")
    return msg


def chunk(version, index, off, data):
    """The answer to a request: ``data`` (at most MAX_CHUNK bytes) of file ``index`` at ``off``."""
    if len(data) > ota.MAX_CHUNK:
        raise ProtocolError("too_large", "chunk too large")
    text = b2a_base64(data).strip().decode()
    return canonical.dump({"v": VERSION, "type": "ota_chunk", "version": version, "file": index,
                           "off": off, "data": text})


def sha256_hex(data):
    return hexlify(hashlib.sha256(data).digest()).decode()
