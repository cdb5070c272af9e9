# Over-the-air update messages, protocol v1 (issue 13), the meter's side: the signed offer, the
# file list it names, the chunk request and the chunk that answers it. A meter imports this
# module only while it takes an update (firmware/ota.py unloads it after); the tool's side
# (encoding offers, lists and chunks, decoding requests, topics) is protocols/otahost.py, which
# a meter never loads. Both run on MicroPython and CPython (protocols/vectors/ota.json).
#
# Topics, outside tm/v1/<c>/meters/ (the gateway's uplink subscribes to every meter kind there):
#   tm/v1/<community>/ota/<meter>/down   tool -> meter: the offer, then chunks
#   tm/v1/<community>/ota/<meter>/up     meter -> tool: chunk requests
#
# The offer is small (~250 bytes) so that taking it costs a meter's heap next to nothing:
# version, target, key id, the number of files and their total size, and the size and SHA-256
# of the file list. It is a tagged message like a reading (protocols/trailer.py), but the tag is
# made with the community's *release key* (key id ``rkid``), which only the operator who signs
# releases holds and every meter is provisioned with (config.json "release_key"); never the
# meter's own key, so a gateway that holds meter keys cannot make a meter run code. Issue 15
# replaces the HMAC with an asymmetric signature, so meters will hold a public key only.
#
# The file list is file 0 of the release, fetched over the chunk protocol like every other
# file into the staging slot and checked against the offer's hash; the meter then reads it back
# one line at a time (entries() below), never whole. One line per file, sorted by path:
#     <path> " " <size decimal> " " <sha256, 64 lowercase hex> "\n"
# Files 1..n of the release are the list's lines in order. Requests and chunks are untagged: a
# chunk's bytes are checked against the hash of its file (the list's is in the signed offer,
# each other file's in the list), so a forged or damaged chunk fails that file's hash.
#
# A ROMFS release (targets "unix-romfs", "xtensawin-romfs": boards whose bundle runs in place
# from a ROMFS image, MicroPython >= 1.25) is one file, the image, listed as IMAGE; the meter
# writes it into the half of its ROMFS partition it does not run from (firmware/ota.py).
#
# Limits: at most 64 files of at most 64 KB each (an image: 192 KB), 192 KB in all; a list of
# at most 9 KB (64 lines of at most 136 bytes); a chunk carries at most MAX_CHUNK bytes (base64
# in the body).
import hashlib
from binascii import a2b_base64, b2a_base64, hexlify

from protocols import canonical, const
from protocols.downlink import as_bytes, check_fields, tagged_body
from protocols.errors import ProtocolError
from protocols.meterlink import VERSION

_MAX_FILES = const(64)
_MAX_FILE = const(65536)
_MAX_BUNDLE = const(196608)
_MAX_LIST = const(9216)
_MAX_LINE = const(137)  # path (64), two spaces, size (5 digits), hash (64), newline
_MAX_OFFER = const(512)
_MAX_BODY = const(3072)  # a chunk's payload: base64 of MAX_CHUNK bytes and the fields
MAX_CHUNK = const(2048)
# Bytecode for the unix port, native code for ESP32 boards; each as files or as a ROMFS image.
TARGETS = ("unix", "xtensawin", "unix-romfs", "xtensawin-romfs")
IMAGE = "fw.romfs"

_FW = ("int", 1, 999999)  # major * 10000 + minor * 100 + patch


def _check_path(p):
    # A file of the bundle: firmware/NAME.EXT or protocols/[DIR/]NAME.EXT, names of [a-z0-9_],
    # EXT py or mpy: nothing that could leave the slot (no "..", no absolute path, no empty
    # level) or land outside the two packages. Or a ROMFS release's image.
    if p == IMAGE:
        return
    if not 0 < len(p) <= 64:
        raise ProtocolError("bad_path", "path of 1 to 64 characters")
    parts = p.split("/")
    if parts[0] not in ("firmware", "protocols") or not 1 < len(parts) <= 3:
        raise ProtocolError("bad_path", "file outside firmware/ and protocols/")
    name = parts[-1]
    dot = name.find(".")
    if dot < 1 or name[dot + 1:] not in ("py", "mpy") or not _name_ok(name[:dot]) \
            or (len(parts) == 3 and not _name_ok(parts[1])):
        raise ProtocolError("bad_path", "bad file path")


def _name_ok(s):
    return bool(s) and not s.strip("abcdefghijklmnopqrstuvwxyz0123456789_")


def _hexok(s):
    return type(s) is str and len(s) == 64 and not s.strip("0123456789abcdef")


def decode_offer(payload, rkid, key):
    """Verify, then parse an offer: the tag under release key id ``rkid`` first, then the body.
    Returns the offer dict. Raises ProtocolError and nothing else."""
    body, kid = tagged_body(payload, _MAX_OFFER, lambda k: key if k == rkid else None)
    m = canonical.parse(body)
    check_fields(m, {"type": None, "version": _FW, "target": ("enum", TARGETS, 0),
                     "rkid": ("int", 0, 0xFFFF), "files": ("int", 1, _MAX_FILES),
                     "size": ("int", 0, _MAX_BUNDLE), "lsize": ("int", 1, _MAX_LIST),
                     "lsha": None})
    if m["type"] != "ota_offer":
        raise ProtocolError("bad_type", "not an offer")
    if not _hexok(m["lsha"]):
        raise ProtocolError("bad_field", "lsha is 64 lowercase hex digits")
    if m["rkid"] != kid:
        raise ProtocolError("topic_mismatch", "key id differs from the trailer")
    return m


def line(b):
    """(path, size, sha256 hex) of one line of a file list (bytes, with its newline)."""
    try:
        t = b.decode()
    except Exception:  # noqa: BLE001 - UnicodeError: not a line of ours
        t = ""
    f = t.split(" ")
    # len(t) == len(b): ASCII only (MicroPython may decode bad UTF-8 without an error).
    if t[-1:] != "\n" or len(t) != len(b) or len(f) != 3:
        raise ProtocolError("bad_line", "a line is: path size sha256")
    s = f[1]
    h = f[2][:-1]
    # One spelling: decimal without sign or leading zeros, hash in lower case.
    if not s.isdigit() or str(int(s)) != s or not _hexok(h):
        raise ProtocolError("bad_line", "a line is: path size sha256")
    _check_path(f[0])
    top = _MAX_BUNDLE if f[0] == IMAGE else _MAX_FILE
    if int(s) > top:
        raise ProtocolError("too_large", "a file is at most %d bytes" % top)
    return f[0], int(s), h


def entries(f, m):
    """Each (path, size, sha256 hex) of the file list read line by line from the open file
    ``f``, checked against offer ``m``: sorted, each once, no more than its file count, an
    image for a ROMFS target and files for the others; at the end (StopIteration) the count,
    the total size and the list's hash must be the offer's."""
    rom = m["target"][-5:] == "romfs"
    h = hashlib.sha256()
    n = 0
    total = 0
    last = ""
    while True:
        b = f.readline(_MAX_LINE + 1)
        if not b:
            break
        h.update(b)
        n += 1
        if n > m["files"]:
            raise ProtocolError("bad_list", "more files than the offer's %d" % m["files"])
        e = line(b)
        if (e[0] == IMAGE) != rom:
            raise ProtocolError("bad_list", "a ROMFS release is its image, " + IMAGE)
        if e[0] <= last:
            raise ProtocolError("bad_list", "files must be sorted, each once")
        last = e[0]
        total += e[1]
        yield e
    if n != m["files"] or total != m["size"]:
        raise ProtocolError("bad_list", "%d files, %d bytes: not the offer's %d, %d"
                            % (n, total, m["files"], m["size"]))
    if hexlify(h.digest()).decode() != m["lsha"]:
        raise ProtocolError("bad_hash", "file list")


def request(meter, version, index, off, n):
    """A meter's request for ``n`` bytes at ``off`` of file ``index`` of release ``version``."""
    return canonical.dump({"v": VERSION, "type": "ota_get", "meter": meter, "version": version,
                           "file": index, "off": off, "n": n})


def decode_chunk(payload):
    """(msg, data bytes) of a chunk; msg["data"] is "" (the text is not kept). Its bytes are
    checked later, against the file's hash."""
    payload = as_bytes(payload)
    if len(payload) > _MAX_BODY:
        raise ProtocolError("too_large", "a chunk is at most %d bytes" % _MAX_BODY)
    # The body is canonical, so "data" comes first: its base64 text is decoded from where it
    # lies and the short rest parsed as the same object with the text left out, which keeps
    # one copy of the data per chunk in a meter's heap instead of a parsed message's four.
    cut = payload.find(b'"', 9)
    if payload[:9] != b'{"data":"' or cut < 0:
        raise ProtocolError("bad_json", "not a chunk")
    msg = canonical.parse(b'{"data":""' + payload[cut + 1:])
    check_fields(msg, {"type": None, "version": _FW, "file": ("int", 0, _MAX_FILES),
                       "off": ("int", 0, _MAX_BUNDLE), "data": None})
    if msg["type"] != "ota_chunk":
        raise ProtocolError("bad_type", "not a chunk")
    try:
        data = a2b_base64(memoryview(payload)[9:cut])  # decoded in place, not copied first
    except Exception:  # noqa: BLE001 - binascii.Error on CPython, ValueError on MicroPython
        raise ProtocolError("bad_field", "data is not base64")
    # One spelling only, as for every body: the data re-encodes to the text it came in,
    # compared 48 bytes (64 characters) at a time so no second copy of the text is made.
    n = len(data)
    if n > MAX_CHUNK or cut - 9 != 4 * ((n + 2) // 3):
        raise ProtocolError("bad_field", "data is not canonical base64")
    for i in range(0, n, 48):
        if not payload.startswith(b2a_base64(data[i:i + 48], newline=False), 9 + i // 3 * 4):
            raise ProtocolError("bad_field", "data is not canonical base64")
    return msg, data


def kind(payload):
    """"offer" or "chunk" for a payload on a meter's down topic (a chunk is untagged JSON
    ending in "}", an offer ends in its tag trailer), without parsing it."""
    return "chunk" if as_bytes(payload)[-1:] == b"}" else "offer"
