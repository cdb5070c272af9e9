"""The gateway's fast codec gives exactly the reference decoder's answers (protocols.messages)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import wire
from protocols import messages
from protocols.errors import ProtocolError

KEY = bytes(range(32))
OTHER = bytes(32)


def keys(meter: str, kid: int) -> bytes | None:
    return {("m01", 1): KEY, ("m02", 1): OTHER}.get((meter, kid))


def outcome(decoder, topic: str, payload: bytes):  # noqa: ANN001, ANN201
    try:
        return ("ok", decoder(topic, payload, keys))
    except ProtocolError as exc:
        return ("error", exc.code)


def samples() -> list[tuple[str, bytes]]:
    r = messages.reading("m01", 1, 3, 7, 1900000, 1710000000, 1710000900, 120, 0, 51234, 20345, 0)
    b = messages.bid("m01", 1, 3, 2, 1900001, 1710000000, [[-100, 5], [200, 9]])
    s = messages.status("m01", 1, 3, 4, 1710000000, 1, 1, {"q": 3})
    return [("tm/v1/c1/meters/m01/reading", messages.encode(r, KEY)),
            ("tm/v1/c1/meters/m01/bid", messages.encode(b, KEY)),
            ("tm/v1/c1/meters/m01/status", messages.encode(s, KEY))]


def _retag(body: bytes, kid: int = 1) -> bytes:
    return body + b"\n" + str(kid).encode() + b":" + wire.tag(KEY, body).hex().encode()


edits = st.sampled_from([
    (b'"imp_wh":120', b'"imp_wh":120.0'), (b'"imp_wh":120', b'"imp_wh":true'), (b'"imp_wh":120', b'"imp_wh":null'),
    (b'"imp_wh":120', b'"imp_wh":-1'), (b'"meter":"m01"', b'"meter":"m\\u00301"'), (b'"v":1', b'"v":2'),
    (b'"flags":0', b'"flags":0,"flags":0'), (b"{", b"{ "), (b'"kid":1', b'"kid":2'), (b'"type":"reading"', b'"type":"bid"'),
    (b'"curve":[[-100,5],[200,9]]', b'"curve":[[-100,5],[200,1]]'), (b'"c":{"q":3}', b'"c":{"q":NaN}'),
    (b'"meter":"m01"', b'"meter":"m02"'), (b"", b""),
])


@settings(max_examples=300)
@given(st.sampled_from(range(3)), edits, st.booleans(), st.integers(0, 400), st.binary(max_size=3))
def test_fast_decode_agrees_with_the_reference(which: int, edit: tuple[bytes, bytes], retag: bool, cut: int,
                                               junk: bytes) -> None:
    topic, payload = samples()[which]
    body = payload.rsplit(b"\n", 1)[0].replace(*edit)
    if retag:  # an authentic sender (valid tag) with a bad body
        payload = _retag(body)
    else:  # a forger: edited body under the old tag, or bytes spliced in
        payload = body + payload[payload.rfind(b"\n"):]
        payload = payload[:cut] + junk + payload[cut:] if junk else payload
    assert outcome(wire.decode, topic, payload) == outcome(messages.decode, topic, payload)


@given(st.binary(max_size=300), st.sampled_from(["reading", "bid", "status", "ack", "award"]))
def test_fast_decode_agrees_on_arbitrary_bytes(payload: bytes, kind: str) -> None:
    topic = f"tm/v1/c1/meters/m01/{kind}"
    assert outcome(wire.decode, topic, payload) == outcome(messages.decode, topic, payload)


@given(st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True), st.integers(0, 0xFFFF), st.integers(0, 2**32 - 1),
       st.integers(0, 2**32 - 1), st.sampled_from(["stored", "duplicate", "conflict", "counter_decrease"]))
def test_fast_ack_is_byte_identical(meter: str, kid: int, boot: int, seq: int, res: str) -> None:
    assert wire.ack(meter, kid, boot, seq, res, KEY) == messages.encode(messages.ack(meter, kid, boot, seq, res), KEY)


@given(st.sampled_from([b"1", b"01", b"0", b"100000", b"99999", b"", b"1a", b" 1", b"-1"]),
       st.sampled_from(["lower", "upper", "short", "long", "junk"]))
def test_fast_decode_agrees_on_trailers(kid: bytes, tag_form: str) -> None:
    topic, payload = samples()[0]
    body = payload.rsplit(b"\n", 1)[0]
    tag = wire.tag(KEY, body).hex()
    tag = {"lower": tag, "upper": tag.upper(), "short": tag[:-2], "long": tag + "0", "junk": tag[:-1] + "g"}[tag_form]
    framed = body + b"\n" + kid + b":" + tag.encode()
    assert outcome(wire.decode, topic, framed) == outcome(messages.decode, topic, framed)
