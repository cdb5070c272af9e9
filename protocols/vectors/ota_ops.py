# Operations the over-the-air update vectors exercise (see runner.py): the meter's side
# (protocols/ota.py) and the tool's (protocols/otahost.py). Bytes travel as hex strings,
# payloads that are ASCII as text.
import io
from binascii import hexlify, unhexlify

from protocols import ota, otahost


def _payload(v):
    return unhexlify(v["payload_hex"]) if "payload_hex" in v else v["payload"].encode()


def _encode_offer(v):
    return otahost.encode_offer(v["msg"], unhexlify(v["key"])).decode()


def _decode_offer(v):
    return ota.decode_offer(_payload(v), v["rkid"], unhexlify(v["key"]))


def _file_list(v):
    return otahost.file_list(v["files"]).decode()


def _entries(v):
    text = unhexlify(v["list_hex"]) if "list_hex" in v else v["list"].encode()
    return [list(e) for e in ota.entries(io.BytesIO(text), v["offer"])]


def _request(v):
    return ota.request(v["meter"], v["version"], v["file"], v["off"], v["n"]).decode()


def _decode_request(v):
    return otahost.decode_request(_payload(v))


def _chunk(v):
    return otahost.chunk(v["version"], v["file"], v["off"], unhexlify(v["data_hex"])).decode()


def _decode_chunk(v):
    msg, data = ota.decode_chunk(_payload(v))
    return {"msg": msg, "data_hex": hexlify(data).decode()}


def _topic(v):
    return otahost.topic(v["community"], v["meter"], v["kind"])


def _parse_topic(v):
    return list(otahost.parse_topic(v["topic"]))


def _sha256(v):
    return otahost.sha256_hex(unhexlify(v["data_hex"]))


OPS = {
    "encode_offer": _encode_offer,
    "decode_offer": _decode_offer,
    "file_list": _file_list,
    "entries": _entries,
    "request": _request,
    "decode_request": _decode_request,
    "chunk": _chunk,
    "decode_chunk": _decode_chunk,
    "topic": _topic,
    "parse_topic": _parse_topic,
    "sha256": _sha256,
}
