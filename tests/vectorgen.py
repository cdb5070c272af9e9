"""Generates protocols/vectors/messages.json and ota.json from independent CPython references.

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
OTA_OUT = OUT.with_name("ota.json")
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


# -- over-the-air update (protocols/ota.py) -------------------------------------------------
RELEASE_KEY = bytes(range(100, 132))
FILES = [["firmware/app.mpy", 5, hashlib.sha256(b"hello").hexdigest()],
         ["firmware/main.mpy", 0, hashlib.sha256(b"").hexdigest()],
         ["protocols/sub/x.mpy", 3, hashlib.sha256(b"abc").hexdigest()]]


def listing(files: list[list[Any]]) -> bytes:
    return "".join(f"{p} {n} {h}\n" for p, n, h in files).encode()


def offer_of(text: bytes, files: int | None = None, size: int | None = None,
             target: str = "unix") -> dict[str, Any]:
    """The offer of the file list ``text``; ``files`` and ``size`` as counted unless given."""
    rows = [r.split(b" ") for r in text.split(b"\n")[:-1]]
    return {"v": 1, "type": "ota_offer", "version": 10400, "target": target, "rkid": 7,
            "files": len(rows) if files is None else files,
            "size": sum(int(r[1]) for r in rows if len(r) == 3 and r[1].isdigit())
            if size is None else size,
            "lsize": len(text), "lsha": hashlib.sha256(text).hexdigest()}


LIST = listing(FILES)
OFFER = offer_of(LIST)
GET = {"v": 1, "type": "ota_get", "meter": "m01", "version": 10400, "file": 2, "off": 1536,
       "n": 1536}


def _chunk_body(data: bytes, **changes: Any) -> bytes:
    import base64
    msg = {"v": 1, "type": "ota_chunk", "version": 10400, "file": 0, "off": 0,
           "data": base64.b64encode(data).decode()}
    return body(with_(msg, **changes))


def _text_or_hex(payload: bytes) -> dict[str, str]:
    try:
        return {"payload": payload.decode("ascii")}
    except UnicodeDecodeError:
        return {"payload_hex": payload.hex()}


def _with_line(i: int, text: str) -> bytes:
    rows = LIST.split(b"\n")
    rows[i] = text.encode()
    return b"\n".join(rows)


def list_vectors() -> list[dict[str, Any]]:
    """The file list read back line by line against its offer: every way a list can be bad."""
    h = FILES[0][2]
    out: list[dict[str, Any]] = [{"name": "list-entries", "op": "entries",
                                  "in": {"list": LIST.decode(), "offer": OFFER}, "out": FILES}]
    bad: list[tuple[str, bytes, dict[str, Any] | None, str]] = [
        ("two-fields", _with_line(0, f"firmware/app.mpy {h}"), None, "bad_line"),
        ("four-fields", _with_line(0, f"firmware/app.mpy 5 {h} x"), None, "bad_line"),
        ("tab", _with_line(0, f"firmware/app.mpy\t5 {h}"), None, "bad_line"),
        ("size-leading-zero", _with_line(0, f"firmware/app.mpy 05 {h}"), None, "bad_line"),
        ("size-signed", _with_line(0, f"firmware/app.mpy +5 {h}"), None, "bad_line"),
        ("size-negative", _with_line(0, f"firmware/app.mpy -5 {h}"), None, "bad_line"),
        ("upper-hash", _with_line(0, f"firmware/app.mpy 5 {h.upper()}"), None, "bad_line"),
        ("short-hash", _with_line(0, "firmware/app.mpy 5 abcd"), None, "bad_line"),
        ("no-newline", LIST[:-1], offer_of(LIST[:-1], files=3, size=8), "bad_line"),
        ("long-line", _with_line(0, "firmware/" + "a" * 200 + f".mpy 5 {h}"), None, "bad_line"),
        ("not-utf8", _with_line(0, f"firmware/app.mpy 5 {h}").replace(b"app", b"\xff\xfe"),
         None, "bad_line"),
        ("dotdot", _with_line(0, f"firmware/../x.mpy 5 {h}"), None, "bad_path"),
        ("absolute", _with_line(0, f"/firmware/a.mpy 5 {h}"), None, "bad_path"),
        ("outside", _with_line(0, f"boot.py 5 {h}"), None, "bad_path"),
        ("empty-level", _with_line(0, f"firmware//a.mpy 5 {h}"), None, "bad_path"),
        ("deep", _with_line(0, f"protocols/a/b/c.mpy 5 {h}"), None, "bad_path"),
        ("bad-ext", _with_line(0, f"firmware/app.txt 5 {h}"), None, "bad_path"),
        ("file-too-big", _with_line(0, f"firmware/app.mpy 65537 {h}"), None, "too_large"),
        ("unsorted", listing(FILES[::-1]), None, "bad_list"),
        ("duplicate", listing([FILES[0], FILES[0], FILES[2]]), None, "bad_list"),
        ("more-files-than-offered", LIST, offer_of(LIST, files=2), "bad_list"),
        ("fewer-files-than-offered", LIST, offer_of(LIST, files=4), "bad_list"),
        ("sizes-not-the-total", LIST, offer_of(LIST, size=9), "bad_list"),
        ("hash-mismatch", LIST, with_(OFFER, lsha=hashlib.sha256(b"other").hexdigest()),
         "bad_hash"),
    ]
    # A ROMFS release is its image alone, larger than a file may be; nothing else mixes in.
    image = [["fw.romfs", 76208, h]]
    rom = listing(image)
    out.append({"name": "list-romfs-image", "op": "entries",
                "in": {"list": rom.decode(), "offer": offer_of(rom, target="xtensawin-romfs")},
                "out": image})
    big = listing([["fw.romfs", 196609, h]])
    bad += [
        ("image-in-a-files-release", rom, None, "bad_list"),
        ("files-in-a-romfs-release", LIST, offer_of(LIST, target="unix-romfs"), "bad_list"),
        ("image-beside-files", listing(FILES + image), offer_of(listing(FILES + image),
                                                                target="unix-romfs"), "bad_list"),
        ("image-too-big", big, offer_of(big, size=0, target="unix-romfs"), "too_large"),
    ]
    for name, text, msg, code in bad:
        out.append({"name": f"list-{name}", "op": "entries",
                    "in": {"list_hex": text.hex(),
                           "offer": offer_of(text) if msg is None else msg}, "error": code})
    return out


def ota_vectors() -> list[dict[str, Any]]:
    key = RELEASE_KEY.hex()
    signed = frame(body(OFFER), kid=7, key=RELEASE_KEY)
    out: list[dict[str, Any]] = [
        {"name": "offer-encode", "op": "encode_offer", "in": {"msg": OFFER, "key": key},
         "out": signed.decode()},
        {"name": "offer-decode", "op": "decode_offer",
         "in": {"payload": signed.decode(), "rkid": 7, "key": key}, "out": OFFER},
        {"name": "file-list", "op": "file_list", "in": {"files": FILES}, "out": LIST.decode()},
    ]
    raw = body(OFFER)
    bad_decode = [
        ("forged", frame(raw, kid=7, key=KEY), 7, "bad_tag"),
        ("tampered", signed.replace(b"10400", b"10401"), 7, "bad_tag"),
        ("other-release-kid", signed, 8, "unknown_key"),
        ("meter-key-instead", frame(raw, kid=1, key=KEY), 7, "unknown_key"),
        ("truncated", signed[:-3], 7, "bad_frame"),
        ("oversize", raw + b" " * 300 + signed[len(raw):], 7, "too_large"),
        ("rkid-mismatch", frame(body(with_(OFFER, rkid=8)), kid=7, key=RELEASE_KEY), 7,
         "topic_mismatch"),
        ("not-canonical", frame(json.dumps(OFFER).encode(), kid=7, key=RELEASE_KEY), 7,
         "bad_json"),
    ]
    for name, payload, rkid, code in bad_decode:
        out.append({"name": f"offer-decode-{name}", "op": "decode_offer",
                    "in": {**_text_or_hex(payload), "rkid": rkid, "key": key}, "error": code})
    bad_msg = [
        ("version-0", with_(OFFER, version=0), "out_of_range"),
        ("bad-target", with_(OFFER, target="esp8266"), "bad_field"),
        ("no-files", with_(OFFER, files=0), "out_of_range"),
        ("too-many-files", with_(OFFER, files=65), "out_of_range"),
        ("bundle-too-big", with_(OFFER, size=196609), "out_of_range"),
        ("empty-list", with_(OFFER, lsize=0), "out_of_range"),
        ("list-too-big", with_(OFFER, lsize=9217), "out_of_range"),
        ("upper-lsha", with_(OFFER, lsha=OFFER["lsha"].upper()), "bad_field"),
        ("short-lsha", with_(OFFER, lsha="ab"), "bad_field"),
        ("int-lsha", with_(OFFER, lsha=7), "bad_field"),
        ("extra-field", with_(OFFER, meter="m01"), "unknown_field"),
        ("missing-lsha", with_(OFFER, lsha=_DROP), "missing_field"),
        ("wrong-type", with_(OFFER, type="ota_manifest"), "bad_type"),
        ("v2", with_(OFFER, v=2), "bad_version"),
    ]
    for name, msg, code in bad_msg:
        out.append({"name": f"offer-{name}", "op": "decode_offer",
                    "in": {"payload": frame(body(msg), kid=7, key=RELEASE_KEY).decode(),
                           "rkid": 7, "key": key}, "error": code})
    out += list_vectors()
    out.append({"name": "request", "op": "request",
                "in": {"meter": "m01", "version": 10400, "file": 2, "off": 1536, "n": 1536},
                "out": body(GET).decode()})
    out.append({"name": "request-decode", "op": "decode_request", "in": {"payload": body(GET).decode()},
                "out": GET})
    for name, msg, code in [("n-0", with_(GET, n=0), "out_of_range"),
                            ("n-huge", with_(GET, n=4096), "out_of_range"),
                            ("file-65", with_(GET, file=65), "out_of_range"),
                            ("bad-meter", with_(GET, meter="m/1"), "bad_field")]:
        out.append({"name": f"request-{name}", "op": "decode_request",
                    "in": {"payload": body(msg).decode()}, "error": code})
    data = bytes(range(256)) * 6
    chunk = _chunk_body(data, off=1536)
    out.append({"name": "chunk", "op": "chunk",
                "in": {"version": 10400, "file": 0, "off": 1536, "data_hex": data.hex()},
                "out": chunk.decode()})
    out.append({"name": "chunk-decode", "op": "decode_chunk", "in": {"payload": chunk.decode()},
                "out": {"msg": {**json.loads(chunk), "data": ""}, "data_hex": data.hex()}})
    out.append({"name": "chunk-empty", "op": "decode_chunk", "in": {"payload": _chunk_body(b"").decode()},
                "out": {"msg": json.loads(_chunk_body(b"")), "data_hex": ""}})
    reordered = b'{"file":0,"data":"YWJj","off":0,"type":"ota_chunk","v":1,"version":10400}'
    out.append({"name": "chunk-too-big", "op": "chunk",
                "in": {"version": 10400, "file": 0, "off": 0, "data_hex": "00" * 2049},
                "error": "too_large"})
    for name, payload, code in [
            ("not-base64", body({**json.loads(_chunk_body(b"abc")), "data": "!!!!"}), "bad_field"),
            ("base64-unpadded", body({**json.loads(_chunk_body(b"abc")), "data": "YWJjZA"}), "bad_field"),
            ("oversize-data", _chunk_body(bytes(2052)), "bad_field"),
            ("truncated", _chunk_body(b"hello")[:-5], "bad_json"),
            ("bad-type", _chunk_body(b"x", type="ota_get"), "bad_type"),
            ("keys-not-sorted", reordered, "bad_json"),
            ("quote-in-data", _chunk_body(b"abc").replace(b'YWJj"', b'YW"Jj"'), "bad_json"),
            ("missing-off", _chunk_body(b"abc", off=_DROP), "missing_field"),
            ("extra-field", _chunk_body(b"abc", meter="m01"), "unknown_field"),
            ("not-an-object", b'{"data":"YWJj"]', "bad_json")]:
        out.append({"name": f"chunk-{name}", "op": "decode_chunk", "in": _text_or_hex(payload),
                    "error": code})
    for kind in ("down", "up"):
        t = f"tm/v1/{C}/ota/m01/{kind}"
        out.append({"name": f"topic-{kind}", "op": "topic",
                    "in": {"community": C, "meter": "m01", "kind": kind}, "out": t})
        out.append({"name": f"parse-topic-{kind}", "op": "parse_topic", "in": {"topic": t},
                    "out": [C, "m01", kind]})
    out.append({"name": "topic-bad-kind", "op": "topic",
                "in": {"community": C, "meter": "m01", "kind": "offer"}, "error": "bad_topic"})
    for name, t in [("meters", f"tm/v1/{C}/meters/m01/up"), ("wildcard", f"tm/v1/{C}/ota/+/up"),
                    ("long", f"tm/v1/{C}/ota/m01/up/x")]:
        out.append({"name": f"parse-topic-{name}", "op": "parse_topic", "in": {"topic": t},
                    "error": "bad_topic"})
    for d in (b"", b"abc", bytes(range(256)) * 4):
        out.append({"name": f"sha256-{len(d)}", "op": "sha256", "in": {"data_hex": d.hex()},
                    "out": hashlib.sha256(d).hexdigest()})
    return out


def generate_ota() -> str:
    return json.dumps({"ops": "ota_ops", "vectors": ota_vectors()}, indent=1, sort_keys=True) + "\n"


if __name__ == "__main__":
    OUT.write_text(generate())
    OTA_OUT.write_text(generate_ota())
    print(f"wrote {OUT} and {OTA_OUT}")
