"""Ingest of signed readings (issue 15): an enrolled meter's readings must carry its ECDSA
signature, checked after the tag and before the body is parsed; what ingest keeps of it."""

from __future__ import annotations

import pickle

import pytest

from gateway.ingest import codec
from gateway.ingest.frames import FrameBuffer, frame
from gateway.ledger.tlog import parse_signature_line
from gateway.registry import Registry
from protocols import messages, trailer
from protocols.errors import ProtocolError
from tests.gateway.conftest import INTERVAL_S, Offline, provision
from tests.gateway.meters import bid, reading
from tests.gateway.signing import Signer, enrol, line, resign, signed_reading

D = 0xC0FFEE_0123456789


def _iv(off: Offline) -> int:
    return int(off.clock.t) // INTERVAL_S


def _setup(off: Offline):  # noqa: ANN202
    spec = provision(off.cfg, 1)[0]
    return spec, enrol(Registry(conn=off.conn), spec.meter, D)


def _stored(off: Offline) -> int:
    return off.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0]


def test_signed_reading_is_stored_with_its_signature_and_a_repeat_is_a_duplicate(offline: Offline) -> None:
    spec, signer = _setup(offline)
    topic, payload, body = signed_reading(spec, signer, _iv(offline), INTERVAL_S)
    assert len(offline.send((topic, payload))) == 1 and offline.counters["stored"] == 1
    record, sig = offline.conn.execute(
        "SELECT o.record, o.sig FROM openings o JOIN readings r ON r.leaf = o.idx").fetchone()
    from gateway.ledger import records

    assert records.unpack(bytes(record)) == body  # the leaf is the body alone
    skid, raw = parse_signature_line(sig)
    assert skid == signer.skid and signer.sign(body) == raw
    offline.send((topic, payload))
    assert offline.counters["duplicate"] == 1 and _stored(offline) == 1


def test_decode_gives_the_body_and_the_signature(offline: Offline) -> None:
    spec, signer = _setup(offline)
    topic, payload, body = signed_reading(spec, signer, _iv(offline), INTERVAL_S)
    keys = codec.KeyCache(Registry(conn=offline.conn))
    community, meter, msg, got, sig = codec.decode(topic, payload, keys, keys.signers)
    assert (community, meter, got, sig) == ("c1", spec.meter, body, (signer.skid, signer.sign(body)))
    assert msg["type"] == "reading"


def test_verified_tuples_keep_the_signature_across_the_pump_pipe(offline: Offline) -> None:
    spec, signer = _setup(offline)
    topic, payload, body = signed_reading(spec, signer, _iv(offline), INTERVAL_S)
    decoder = codec.MeterDecoder(codec.KeyCache(Registry(conn=offline.conn)), offline.counters)
    verified = decoder.decode_all([(topic, payload)])
    (kind, value), = FrameBuffer().feed(frame("messages", verified))
    assert value == verified and value[0][5] == (signer.skid, signer.sign(body))
    assert pickle.loads(pickle.dumps(value)) == verified


@pytest.mark.parametrize("case, code", [
    ("unsigned", "unsigned"),
    ("unknown_skid", "unknown_key"),
    ("other_key", "bad_signature"),
    ("other_body", "bad_signature"),
    ("malformed", "bad_frame"),
])
def test_enrolled_meter_readings_without_a_good_signature_are_refused(offline: Offline, case: str,
                                                                      code: str) -> None:
    spec, signer = _setup(offline)
    topic, payload, body = signed_reading(spec, signer, _iv(offline), INTERVAL_S)
    forged = {
        "unsigned": lambda: resign(payload, spec.key, None),
        "unknown_skid": lambda: resign(payload, spec.key, line(2, signer.sign(body))),
        "other_key": lambda: resign(payload, spec.key, line(1, Signer(D + 1, 1).sign(body))),
        "other_body": lambda: resign(payload, spec.key, line(1, signer.sign(body + b" "))),
        "malformed": lambda: resign(payload, spec.key, line(1, signer.sign(body)).upper()),
    }[case]()
    assert offline.send((topic, forged)) == []
    assert offline.counters[code] == 1 and _stored(offline) == 0
    assert offline.conn.execute("SELECT COUNT(*) FROM leaves").fetchone()[0] == 0


def test_tag_is_checked_before_the_signature(offline: Offline) -> None:
    spec, signer = _setup(offline)
    topic, payload, body = signed_reading(spec, signer, _iv(offline), INTERVAL_S)
    bad_tag = resign(payload, bytes(32), line(9, b"\x00" * 64))  # a bad signature under a wrong key
    assert offline.send((topic, bad_tag)) == [] and offline.counters["bad_tag"] == 1


def test_retired_signing_key_is_unknown(offline: Offline) -> None:
    spec, old = _setup(offline)
    new = enrol(Registry(conn=offline.conn), spec.meter, D + 7)  # the board was replaced
    assert new.skid == 2
    topic, payload, _ = signed_reading(spec, old, _iv(offline), INTERVAL_S)
    assert offline.send((topic, payload)) == [] and offline.counters["unknown_key"] == 1
    spec.seq -= 1
    assert len(offline.send(signed_reading(spec, new, _iv(offline), INTERVAL_S)[:2])) == 1


def test_meter_without_enrolled_key_sends_plain_readings_and_no_signatures(offline: Offline) -> None:
    spec = provision(offline.cfg, 1)[0]
    topic, payload, _ = reading(spec, "c1", _iv(offline), INTERVAL_S)
    assert len(offline.send((topic, payload))) == 1
    assert offline.conn.execute("SELECT sig FROM openings").fetchone()[0] is None
    signed = resign(reading(spec, "c1", _iv(offline), INTERVAL_S)[1], spec.key, line(1, b"\x01" * 64))
    assert offline.send((topic, signed)) == [] and offline.counters["unexpected_signature"] == 1


def test_signature_line_on_a_bid_is_unexpected(offline: Offline) -> None:
    spec, signer = _setup(offline)
    topic, payload = bid(spec, "c1", _iv(offline) + 2, 1, [[10, 100]], int(offline.clock.t))
    body = trailer.split(payload)[0]
    signed = resign(payload, spec.key, line(1, signer.sign(body)))
    assert offline.send((topic, signed)) == [] and offline.counters["unexpected_signature"] == 1
    assert len(offline.send((topic, payload))) == 0 and offline.counters["bid"] == 1  # bids stay HMAC-only


def test_broken_json_with_a_newline_is_still_a_bad_frame_or_json(offline: Offline) -> None:
    spec, _ = _setup(offline)
    topic, payload, _ = reading(spec, "c1", _iv(offline), INTERVAL_S)
    body = trailer.split(payload)[0]
    keys = codec.KeyCache(Registry(conn=offline.conn))
    for bad, code in ((body[:-1], "bad_json"), (body + b"\nsig x", "bad_frame"), (b"{\n}", "bad_frame")):
        with pytest.raises(ProtocolError) as err:
            codec.decode(topic, trailer.encode(bad, spec.kid, spec.key), keys, keys.signers)
        assert err.value.code == code, bad


def test_non_bytes_and_bad_topics_are_protocol_errors(offline: Offline) -> None:
    keys = codec.KeyCache(Registry(conn=offline.conn))
    for topic, payload in (("x", b"a"), ("tm/v1/c1/meters/m000/reading", "text"), ("tm/v1/c1/meters/m000/reading", 5)):
        with pytest.raises(ProtocolError):
            codec.decode(topic, payload, keys, keys.signers)  # type: ignore[arg-type]
    assert messages.TAGGED
