# Operations the message vectors exercise (see runner.py). Bytes travel as hex strings.
from binascii import hexlify, unhexlify

from protocols import auth, messages, topics


def _hmac(v):
    return hexlify(auth.hmac_sha256(unhexlify(v["key"]), unhexlify(v["msg"]))).decode()


def _encode(v):
    key = unhexlify(v["key"]) if v.get("key") else None
    return messages.encode(v["msg"], key).decode()


def _decode(v):
    keys = v.get("keys", {})

    def lookup(meter, kid):
        key = keys.get(meter + ":" + str(kid))
        return unhexlify(key) if key else None

    payload = unhexlify(v["payload_hex"]) if "payload_hex" in v else v["payload"].encode()
    community, subject, msg, body = messages.decode(v["topic"], payload, lookup)
    return {"community": community, "subject": subject, "msg": msg, "body": body.decode()}


def _meter_topic(v):
    return topics.meter_topic(v["community"], v["meter"], v["kind"])


def _parse_topic(v):
    return list(topics.parse(v["topic"]))


def _interval(v):
    return messages.interval_index(v["t"], v["interval_s"])


OPS = {
    "hmac": _hmac,
    "encode": _encode,
    "decode": _decode,
    "meter_topic": _meter_topic,
    "parse_topic": _parse_topic,
    "interval": _interval,
}
