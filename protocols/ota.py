# Over-the-air update messages, protocol v1 (issue 13): the signed manifest of an application
# bundle, the meter's chunk request and the chunk that answers it. Read by `tmeter fw ota`
# (tmeter/fwtools/ota.py) and by a meter only while it takes an update (firmware/ota.py imports
# this module when an offer arrives and unloads it after): nothing here is resident on a meter.
#
# Topics, outside tm/v1/<c>/meters/ (the gateway's uplink subscribes to every meter kind there):
#   tm/v1/<community>/ota/<meter>/down   tool -> meter: the manifest (offer), then chunks
#   tm/v1/<community>/ota/<meter>/up     meter -> tool: chunk requests
#
# The manifest is a tagged message like a reading (protocols/trailer.py), but the tag is made
# with the community's *release key* (key id ``rkid``), which only the operator who signs
# releases holds and every meter is provisioned with (config.json "release_key"); never the
# meter's own key, so a gateway that holds meter keys cannot make a meter run code. Issue 15
# replaces the HMAC with an asymmetric signature, so meters will hold a public key only.
# Requests and chunks are untagged: a chunk's bytes are checked against the SHA-256 of its file
# in the verified manifest, so a forged or damaged chunk fails that file's hash.
#
# Limits: a manifest lists at most 64 files of at most 64 KB each (192 KB in all) and its
# payload is at most MAX_OTA_PAYLOAD (the firmware's MQTT client takes packets of 8 KB); a
# chunk carries at most MAX_CHUNK bytes (base64 in the body).
import hashlib
from binascii import a2b_base64, b2a_base64, hexlify

from protocols import canonical, const, trailer
from protocols.downlink import KINDS, as_bytes, check_fields, tagged_body
from protocols.downlink import topic as downlink_topic
from protocols.errors import ProtocolError
from protocols.meterlink import VERSION, _check_field

MAX_OTA_PAYLOAD = const(7168)
MAX_FILES = const(64)
MAX_FILE = const(65536)
MAX_BUNDLE = const(196608)
MAX_CHUNK = const(2048)
MAX_FW = const(999999)  # major * 10000 + minor * 100 + patch
TARGETS = ("unix", "xtensawin")  # bytecode for the unix port, native code for ESP32 boards

_T_MANIFEST = "ota_manifest"
_T_GET = "ota_get"
_T_CHUNK = "ota_chunk"
_FW = ("int", 1, MAX_FW)
_INDEX = ("int", 0, MAX_FILES - 1)
_OFF = ("int", 0, MAX_FILE)


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
        return parts[2], _check_id(parts[4]), parts[5]
    except ProtocolError:
        raise ProtocolError("bad_topic", "invalid meter id")


def _check_id(s):
    _check_field("meter", s, ("id", 0, 0))
    return s


def _check_path(p):
    # A file of the bundle: firmware/NAME.EXT or protocols/[DIR/]NAME.EXT, names of [a-z0-9_],
    # EXT py or mpy: nothing that could leave the slot (no "..", no absolute path, no empty
    # level) or land outside the two packages.
    if type(p) is not str or not 0 < len(p) <= 64:
        raise ProtocolError("bad_field", "bad file path")
    parts = p.split("/")
    if parts[0] not in ("firmware", "protocols") or not 1 < len(parts) <= 3:
        raise ProtocolError("bad_field", "file outside firmware/ and protocols/")
    name = parts[-1]
    dot = name.find(".")
    if dot < 1 or name[dot + 1:] not in ("py", "mpy") or not _name_ok(name[:dot]) \
            or (len(parts) == 3 and not _name_ok(parts[1])):
        raise ProtocolError("bad_field", "bad file path")


def _name_ok(s):
    return bool(s) and not s.strip("abcdefghijklmnopqrstuvwxyz0123456789_")


def validate_manifest(msg):
    """Check a manifest's schema and limits; returns the number of bytes it lists."""
    check_fields(msg, {"type": None, "version": _FW, "target": ("enum", TARGETS, 0),
                        "rkid": ("int", 0, 0xFFFF), "files": None})
    if msg["type"] != _T_MANIFEST:
        raise ProtocolError("bad_type", "not a manifest")
    files = msg["files"]
    if type(files) is not list or not 0 < len(files) <= MAX_FILES:
        raise ProtocolError("bad_field", "files must list 1 to 64 files")
    total = 0
    last = ""
    for f in files:
        if type(f) is not list or len(f) != 3:
            raise ProtocolError("bad_field", "a file is [path, size, sha256]")
        _check_path(f[0])
        if f[0] <= last:
            raise ProtocolError("bad_field", "files must be sorted, each once")
        last = f[0]
        _check_field("size", f[1], ("int", 0, MAX_FILE))
        h = f[2]
        if type(h) is not str or len(h) != 64 or not _hexok(h):
            raise ProtocolError("bad_field", "sha256 is 64 lowercase hex digits")
        total += f[1]
    if total > MAX_BUNDLE:
        raise ProtocolError("too_large", "bundle exceeds %d bytes" % MAX_BUNDLE)
    return total


def _hexok(s):
    return not s.strip("0123456789abcdef")


def manifest(version, target, rkid, files):
    """A manifest dict; ``files``: [[path, size, sha256 hex], ...] sorted by path."""
    return {"v": VERSION, "type": _T_MANIFEST, "version": version, "target": target,
            "rkid": rkid, "files": files}


def encode_manifest(msg, key):
    """The offer payload: the canonical manifest tagged with the release key."""
    validate_manifest(msg)
    body = canonical.dump(msg)
    if len(body) > MAX_OTA_PAYLOAD - 80:
        raise ProtocolError("too_large", "manifest too large")
    return trailer.encode(body, msg["rkid"], key)


def decode_manifest(payload, rkid, key):
    """Verify, then parse an offer: the tag under release key id ``rkid`` first, then the body.
    Returns the manifest dict. Raises ProtocolError and nothing else."""
    body, kid = tagged_body(payload, MAX_OTA_PAYLOAD, lambda k: key if k == rkid else None)
    msg = canonical.parse(body)
    validate_manifest(msg)
    if msg["rkid"] != kid:
        raise ProtocolError("topic_mismatch", "key id differs from the trailer")
    return msg


def request(meter, version, index, off, n):
    """A meter's request for ``n`` bytes at ``off`` of file ``index`` of release ``version``."""
    msg = {"v": VERSION, "type": _T_GET, "meter": meter, "version": version, "file": index,
           "off": off, "n": n}
    return canonical.dump(msg)


def decode_request(payload):
    payload = as_bytes(payload)
    if len(payload) > 512:
        raise ProtocolError("too_large", "request too large")
    msg = canonical.parse(payload)
    check_fields(msg, {"type": None, "meter": ("id", 0, 0), "version": _FW, "file": _INDEX,
                        "off": _OFF, "n": ("int", 1, MAX_CHUNK)})
    if msg["type"] != _T_GET:
        raise ProtocolError("bad_type", "not a chunk request")
    return msg


def chunk(version, index, off, data):
    """The answer to a request: ``data`` (at most MAX_CHUNK bytes) of file ``index`` at ``off``."""
    if len(data) > MAX_CHUNK:
        raise ProtocolError("too_large", "chunk too large")
    text = b2a_base64(data).strip().decode()
    return canonical.dump({"v": VERSION, "type": _T_CHUNK, "version": version, "file": index,
                           "off": off, "data": text})


def decode_chunk(payload):
    """(msg, data bytes) of a chunk. Its bytes are checked later, against the file's hash."""
    payload = as_bytes(payload)
    if len(payload) > MAX_OTA_PAYLOAD:
        raise ProtocolError("too_large", "payload exceeds %d bytes" % MAX_OTA_PAYLOAD)
    msg = canonical.parse(payload)
    check_fields(msg, {"type": None, "version": _FW, "file": _INDEX, "off": _OFF,
                        "data": ("text", 0, 4 * MAX_CHUNK // 3 + 4)})
    if msg["type"] != _T_CHUNK:
        raise ProtocolError("bad_type", "not a chunk")
    try:
        data = a2b_base64(msg["data"])
    except Exception:  # noqa: BLE001 - binascii.Error on CPython, ValueError on MicroPython
        raise ProtocolError("bad_field", "data is not base64")
    # One spelling only, as for every body: the data re-encodes to the text it came in.
    if len(data) > MAX_CHUNK or b2a_base64(data).strip().decode() != msg["data"]:
        raise ProtocolError("bad_field", "data is not canonical base64")
    return msg, data


def kind(payload):
    """"manifest" or "chunk" for a payload on a meter's down topic (a chunk is untagged JSON
    ending in "}", a manifest ends in its tag trailer), without parsing it."""
    return "chunk" if as_bytes(payload)[-1:] == b"}" else "manifest"


def sha256_hex(data):
    return hexlify(hashlib.sha256(data).digest()).decode()
