"""Generates protocols/vectors/messages.json from independent CPython references.

Expected bytes come from the standard library (``json.dumps`` with sorted keys, ``hmac``),
not from protocols/, so the vectors check the implementation rather than restate it. Run
``python3 -m tests.vectorgen`` after changing the cases; a test checks the file is current.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "protocols" / "vectors" / "messages.json"
KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
C = "c1"

# RFC 4231 test cases 1, 2, 3, 4, 6, 7 (case 5 truncates the tag).
RFC4231 = [
    ("0b" * 20, b"Hi There".hex()),
    (b"Jefe".hex(), b"what do ya want for nothing?".hex()),
    ("aa" * 20, "dd" * 50),
    (bytes(range(1, 26)).hex(), "cd" * 50),
    ("aa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First".hex()),
    ("aa" * 131, (b"This is a test using a larger than block-size key and a larger than block-size "
                  b"data. The key needs to be hashed before being used by the HMAC algorithm.").hex()),
]

READING = {"v": 1, "type": "reading", "meter": "m01", "kid": 1, "boot": 3, "seq": 7, "iv": 1900000,
           "t0": 1710000000, "t1": 1710000900, "imp_wh": 120, "exp_wh": 0, "cnt_imp_wh": 51234,
           "cnt_exp_wh": 20345, "flags": 0}
BID = {"v": 1, "type": "bid", "meter": "m01", "kid": 1, "boot": 3, "n": 2, "iv": 1900001, "ts": 1710000830,
       "curve": [[-2000, 50000], [0, 50000], [0, 100000], [3000, 200000]]}
ROOT_B64 = "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="  # base64 of SHA-256(""), RFC 6962's empty tree
STATUS = {"v": 1, "type": "status", "meter": "m01", "kid": 1, "boot": 3, "n": 9, "ts": 1710000830,
          "online": 1, "time_ok": 1, "c": {"mb_err": 2, "q_depth": 0, "reconnects": 1, "heap_free": 70000},
          "cp": {"size": 42, "root": ROOT_B64}}
ACK = {"v": 1, "type": "ack", "meter": "m01", "kid": 1, "boot": 3, "seq": 7, "res": "stored"}
AWARD = {"v": 1, "type": "award", "meter": "m01", "kid": 1, "iv": 1900001, "ts": 1710000845, "mech": "p2p",
         "q_wh": -1500, "price": 120000, "trades": [["m02", -1000, 118000], ["m07", -500, 124000]]}
RESULT = {"v": 1, "type": "result", "iv": 1900001, "mech": "uniform", "price": 120000, "bids": 10,
          "traded_wh": 5400, "grid_import_wh": 1200, "grid_export_wh": 0, "community_cost": -5300000,
          "bau_cost": 2100000}
GW_STATUS = {"v": 1, "type": "gateway_status", "ts": 1710000900, "online": 1, "iv": 1900001,
             "c": {"accepted": 1234, "bad_tag": 2}}
CHECKPOINT = {"v": 1, "type": "checkpoint", "origin": "tmeter.example/c1", "size": 42,
              "root": ROOT_B64, "note": "dG1ldGVyLmV4YW1wbGUvYzEK"}

TOPIC = {
    "reading": f"tm/v1/{C}/meters/m01/reading", "bid": f"tm/v1/{C}/meters/m01/bid",
    "status": f"tm/v1/{C}/meters/m01/status", "ack": f"tm/v1/{C}/meters/m01/ack",
    "award": f"tm/v1/{C}/meters/m01/award", "result": f"tm/v1/{C}/market/1900001/result",
    "gateway_status": f"tm/v1/{C}/gateway/status", "checkpoint": f"tm/v1/{C}/ledger/checkpoint",
}
EXAMPLES = [READING, BID, STATUS, ACK, AWARD, RESULT, GW_STATUS, CHECKPOINT]
TAGGED = {"reading", "bid", "status", "ack", "award"}


def body(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, sort_keys=True, separators=(",", ":")).encode()


def frame(raw: bytes, kid: int = 1, key: bytes = KEY) -> bytes:
    return raw + b"\n" + str(kid).encode() + b":" + hmac.new(key, raw, hashlib.sha256).hexdigest().encode()


def payload_of(msg: dict[str, Any]) -> bytes:
    return frame(body(msg)) if msg["type"] in TAGGED else body(msg)


def with_(msg: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(msg)
    for name, value in changes.items():
        if value is _DROP:
            del out[name]
        else:
            out[name] = value
    return out


_DROP = object()


def hmac_vectors() -> list[dict[str, Any]]:
    return [{"name": f"rfc4231-{i}", "op": "hmac", "in": {"key": k, "msg": m},
             "out": hmac.new(bytes.fromhex(k), bytes.fromhex(m), hashlib.sha256).hexdigest()}
            for i, (k, m) in enumerate(RFC4231)]


def encode_vectors() -> list[dict[str, Any]]:
    out = []
    for msg in EXAMPLES:
        key = KEY.hex() if msg["type"] in TAGGED else None
        out.append({"name": f"encode-{msg['type']}", "op": "encode", "in": {"msg": msg, "key": key},
                    "out": payload_of(msg).decode()})
    bad = [
        ("t1-before-t0", with_(READING, t1=1709999999), "out_of_range"),
        ("negative-energy", with_(READING, imp_wh=-1), "out_of_range"),
        ("huge-counter", with_(READING, cnt_imp_wh=10 ** 16), "out_of_range"),
        ("float-energy", with_(READING, imp_wh=1.5), "bad_field"),
        ("bool-flags", with_(READING, flags=True), "bad_field"),
        ("unknown-flag", with_(READING, flags=64), "out_of_range"),
        ("bad-meter-id", with_(READING, meter="m/1"), "bad_field"),
        ("unknown-field", with_(READING, extra=1), "unknown_field"),
        ("missing-field", with_(READING, seq=_DROP), "missing_field"),
        ("version-2", with_(READING, v=2), "bad_version"),
        ("unknown-type", with_(READING, type="invoice"), "bad_type"),
        ("curve-price-down", with_(BID, curve=[[0, 5], [10, 4]]), "bad_curve"),
        ("curve-q-down", with_(BID, curve=[[10, 5], [0, 6]]), "bad_curve"),
        ("curve-empty", with_(BID, curve=[]), "bad_curve"),
        ("curve-too-long", with_(BID, curve=[[i, i] for i in range(17)]), "bad_curve"),
        ("curve-price-huge", with_(BID, curve=[[0, 10 ** 10]]), "out_of_range"),
        ("award-bad-mech", with_(AWARD, mech="pay-as-bid"), "bad_field"),
        ("award-bad-peer", with_(AWARD, trades=[["m 2", 1, 1]]), "bad_field"),
        ("status-bad-counter", with_(STATUS, c={"x": -1}), "out_of_range"),
        # The witness: a checkpoint's size and root, checked exactly as the checkpoint's own.
        ("status-no-cp", with_(STATUS, cp=_DROP), "missing_field"),
        ("status-cp-not-object", with_(STATUS, cp=[42, ROOT_B64]), "bad_field"),
        ("status-cp-extra-key", with_(STATUS, cp={"size": 42, "root": ROOT_B64, "origin": "x"}), "bad_field"),
        ("status-cp-no-root", with_(STATUS, cp={"size": 42}), "bad_field"),
        ("status-cp-other-key", with_(STATUS, cp={"size": 42, "hash": ROOT_B64}), "missing_field"),
        ("status-cp-negative-size", with_(STATUS, cp={"size": -1, "root": ROOT_B64}), "out_of_range"),
        ("status-cp-bool-size", with_(STATUS, cp={"size": True, "root": ROOT_B64}), "bad_field"),
        ("status-cp-long-root", with_(STATUS, cp={"size": 42, "root": "A" * 65}), "bad_field"),
        ("status-cp-empty-root", with_(STATUS, cp={"size": 42, "root": ""}), "bad_field"),
        ("checkpoint-negative-size", with_(CHECKPOINT, size=-1), "out_of_range"),
    ]
    for name, msg, code in bad:
        out.append({"name": f"encode-{name}", "op": "encode", "in": {"msg": msg, "key": KEY.hex()},
                    "error": code})
    out.append({"name": "encode-untagged-reading", "op": "encode", "in": {"msg": READING, "key": None},
                "error": "unknown_key"})
    return out


def decoded(msg: dict[str, Any], community: str = C) -> dict[str, Any]:
    subject: Any = msg.get("meter")
    if msg["type"] == "result":
        subject = msg["iv"]
    return {"community": community, "subject": subject, "msg": msg, "body": body(msg).decode()}


def decode_vectors() -> list[dict[str, Any]]:
    keys = {"m01:1": KEY.hex(), "m02:1": OTHER_KEY.hex()}
    out = []
    for msg in EXAMPLES:
        out.append({"name": f"decode-{msg['type']}", "op": "decode",
                    "in": {"topic": TOPIC[msg["type"]], "payload": payload_of(msg).decode(), "keys": keys},
                    "out": decoded(msg)})
    good = payload_of(READING)
    raw = body(READING)
    tag_hex = hmac.new(KEY, raw, hashlib.sha256).hexdigest()
    bad: list[tuple[str, str, bytes, str]] = [
        ("bad-topic-root", "tm/v2/c1/meters/m01/reading", good, "bad_topic"),
        ("bad-topic-wildcard", "tm/v1/c1/meters/+/reading", good, "bad_topic"),
        ("bad-topic-kind", "tm/v1/c1/meters/m01/invoice", good, "bad_topic"),
        ("bad-topic-interval", "tm/v1/c1/market/007/result", body(RESULT), "bad_topic"),
        ("unknown-key-meter", "tm/v1/c1/meters/m09/reading", good, "unknown_key"),
        ("unknown-key-kid", TOPIC["reading"], frame(raw, kid=2), "unknown_key"),
        ("wrong-key", TOPIC["reading"], frame(raw, key=OTHER_KEY), "bad_tag"),
        ("tampered-body", TOPIC["reading"], good.replace(b'"imp_wh":120', b'"imp_wh":121'), "bad_tag"),
        ("truncated-tag", TOPIC["reading"], good[:-2], "bad_frame"),
        ("no-trailer", TOPIC["reading"], raw, "bad_frame"),
        ("uppercase-tag", TOPIC["reading"], raw + b"\n1:" + tag_hex.upper().encode(), "bad_frame"),
        ("kid-leading-zero", TOPIC["reading"], raw + b"\n01:" + tag_hex.encode(), "bad_frame"),
        ("kid-not-digits", TOPIC["reading"], raw + b"\nx:" + tag_hex.encode(), "bad_frame"),
        ("oversized", TOPIC["reading"], raw + b" " * 5000 + b"\n1:" + tag_hex.encode(), "too_large"),
        ("reading-on-bid-topic", TOPIC["bid"], good, "topic_mismatch"),
        ("meter-mismatch", "tm/v1/c1/meters/m02/reading", frame(raw, key=OTHER_KEY), "topic_mismatch"),
        ("kid-mismatch", TOPIC["reading"], frame(body(with_(READING, kid=2))), "topic_mismatch"),
        ("whitespace", TOPIC["reading"], frame(raw.replace(b",", b", ")), "bad_json"),
        ("unsorted-keys", TOPIC["reading"],
         frame(json.dumps(READING, separators=(",", ":")).encode()), "bad_json"),
        ("trailing-comma", TOPIC["reading"], frame(raw[:-1] + b",}"), "bad_json"),
        ("leading-zero-number", TOPIC["reading"], frame(raw.replace(b":120,", b":0120,")), "bad_json"),
        ("nan", TOPIC["reading"], frame(raw.replace(b":120,", b":NaN,")), "bad_json"),
        ("float", TOPIC["reading"], frame(raw.replace(b":120,", b":120.0,")), "bad_json"),
        ("huge-exponent", TOPIC["reading"], frame(raw.replace(b":120,", b":1e999,")), "bad_json"),
        ("non-ascii", TOPIC["reading"], frame(raw.replace(b"m01", b"m\xc3\xa9")), "bad_json"),
        ("not-object", TOPIC["reading"], frame(b"[1,2,3]"), "bad_json"),
        ("deep-nesting", TOPIC["reading"], frame(b"[" * 1500 + b"]" * 1500), "bad_json"),
        ("version-0", TOPIC["reading"], frame(body(with_(READING, v=0))), "bad_version"),
        ("version-missing", TOPIC["reading"], frame(body(with_(READING, v=_DROP))), "bad_version"),
        ("negative", TOPIC["reading"], frame(body(with_(READING, exp_wh=-5))), "out_of_range"),
        ("huge", TOPIC["reading"], frame(body(with_(READING, seq=2 ** 70))), "out_of_range"),
        ("result-interval-mismatch", "tm/v1/c1/market/1900002/result", body(RESULT), "topic_mismatch"),
    ]
    for name, topic, payload, code in bad:
        vec: dict[str, Any] = {"name": f"decode-{name}", "op": "decode",
                               "in": {"topic": topic, "keys": keys}, "error": code}
        try:
            vec["in"]["payload"] = payload.decode("ascii")
        except UnicodeDecodeError:
            vec["in"]["payload_hex"] = payload.hex()
        out.append(vec)
    return out


def topic_vectors() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for kind in ("reading", "bid", "status", "ack", "award"):
        out.append({"name": f"meter-topic-{kind}", "op": "meter_topic",
                    "in": {"community": C, "meter": "m01", "kind": kind}, "out": TOPIC[kind]})
    out.append({"name": "meter-topic-bad-meter", "op": "meter_topic",
                "in": {"community": C, "meter": "m#1", "kind": "reading"}, "error": "bad_topic"})
    out.append({"name": "meter-topic-long-id", "op": "meter_topic",
                "in": {"community": C, "meter": "m" * 33, "kind": "reading"}, "error": "bad_topic"})
    parsed = {"reading": [C, "reading", "m01"], "award": [C, "award", "m01"],
              "result": [C, "result", 1900001], "gateway_status": [C, "gateway_status", None],
              "checkpoint": [C, "checkpoint", None]}
    for kind, want in parsed.items():
        out.append({"name": f"parse-topic-{kind}", "op": "parse_topic", "in": {"topic": TOPIC[kind]},
                    "out": want})
    for name, topic in [("empty", ""), ("trailing-slash", "tm/v1/c1/meters/m01/reading/"),
                        ("empty-level", "tm/v1//meters/m01/reading"), ("hash", "tm/v1/c1/#"),
                        ("negative-interval", "tm/v1/c1/market/-1/result")]:
        out.append({"name": f"parse-topic-{name}", "op": "parse_topic", "in": {"topic": topic},
                    "error": "bad_topic"})
    for t, s in [(0, 900), (899, 900), (900, 900), (1710000899, 900), (1710000900, 60)]:
        out.append({"name": f"interval-{t}-{s}", "op": "interval", "in": {"t": t, "interval_s": s},
                    "out": t // s})
    return out


def generate() -> str:
    doc = {"ops": "messages_ops",
           "vectors": hmac_vectors() + encode_vectors() + decode_vectors() + topic_vectors()}
    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(generate())
    print(f"wrote {OUT}")
