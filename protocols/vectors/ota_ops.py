# Operations the over-the-air update vectors exercise (see runner.py). Bytes travel as hex
# strings, payloads that are ASCII as text.
from binascii import hexlify, unhexlify

from protocols import ota


def _payload(v):
    return unhexlify(v["payload_hex"]) if "payload_hex" in v else v["payload"].encode()


def _encode_manifest(v):
    return ota.encode_manifest(v["msg"], unhexlify(v["key"])).decode()


def _decode_manifest(v):
    return ota.decode_manifest(_payload(v), v["rkid"], unhexlify(v["key"]))


def _request(v):
    return ota.request(v["meter"], v["version"], v["file"], v["off"], v["n"]).decode()


def _decode_request(v):
    return ota.decode_request(_payload(v))


def _chunk(v):
    return ota.chunk(v["version"], v["file"], v["off"], unhexlify(v["data_hex"])).decode()


def _decode_chunk(v):
    msg, data = ota.decode_chunk(_payload(v))
    return {"msg": msg, "data_hex": hexlify(data).decode()}


def _topic(v):
    return ota.topic(v["community"], v["meter"], v["kind"])


def _parse_topic(v):
    return list(ota.parse_topic(v["topic"]))


def _sha256(v):
    return ota.sha256_hex(unhexlify(v["data_hex"]))


OPS = {
    "encode_manifest": _encode_manifest,
    "decode_manifest": _decode_manifest,
    "request": _request,
    "decode_request": _decode_request,
    "chunk": _chunk,
    "decode_chunk": _decode_chunk,
    "topic": _topic,
    "parse_topic": _parse_topic,
    "sha256": _sha256,
}
