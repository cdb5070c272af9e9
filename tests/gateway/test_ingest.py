"""Ingest rules on the database directly: tags, replays, duplicates, conflicts, monotonic counters,
range checks, key rotation; and the fair queue's per-meter bound and round robin."""

from __future__ import annotations

import asyncio
import base64

from gateway.ingest.fairqueue import FairQueue
from gateway.registry import Registry
from protocols import canonical, messages, topics
from tests.gateway.conftest import INTERVAL_S, Offline, provision
from tests.gateway.meters import MeterSpec, reading


def res(out: list) -> list[str]:  # noqa: ANN001
    return [canonical.parse(o.payload.rsplit(b"\n", 1)[0])["res"] for o in out]


def _iv(off: Offline) -> int:
    return int(off.clock.t) // INTERVAL_S


def test_stored_then_duplicate_is_acked_again_and_stored_once(offline: Offline) -> None:
    spec = provision(offline.cfg, 1)[0]
    msg = reading(spec, "c1", _iv(offline), INTERVAL_S)[:2]
    assert res(offline.send(msg)) == ["stored"]
    assert res(offline.send(msg, msg)) == ["duplicate", "duplicate"]  # a replay is a duplicate
    assert offline.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 1
    assert offline.counters["stored"] == 1 and offline.counters["duplicate"] == 2


def test_forged_tags_are_rejected_counted_and_never_acked(offline: Offline) -> None:
    a, b = provision(offline.cfg, 2)
    topic, payload, _ = reading(a, "c1", _iv(offline), INTERVAL_S)
    forged_body = payload.replace(b'"imp_wh":100', b'"imp_wh":900')
    wrong_key = reading(MeterSpec(a.meter, a.kid, bytes(32), seq=50), "c1", _iv(offline), INTERVAL_S)[:2]
    as_other = (topic.replace(a.meter, b.meter), payload)  # A's message replayed on B's topic
    out = offline.send((topic, forged_body), wrong_key, as_other)
    assert out == []
    assert offline.counters["bad_tag"] == 3
    assert offline.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 0


def test_unknown_meter_and_retired_key(offline: Offline) -> None:
    spec = provision(offline.cfg, 1)[0]
    stranger = MeterSpec("x1", 1, bytes(32))
    assert offline.send(reading(stranger, "c1", _iv(offline), INTERVAL_S)[:2]) == []
    reg = Registry(conn=offline.conn)
    new = reg.provision(spec.meter, "c1", rotate=True, new_password=True)  # kid 2, kid 1 still valid
    assert new.kid == 2
    assert res(offline.send(reading(spec, "c1", _iv(offline), INTERVAL_S)[:2])) == ["stored"]
    rotated = MeterSpec(spec.meter, 2, new.key, seq=spec.seq, counter_imp=spec.counter_imp, counter_exp=spec.counter_exp)
    assert res(offline.send(reading(rotated, "c1", _iv(offline), INTERVAL_S)[:2])) == ["stored"]
    assert reg.key(spec.meter, 1) is None  # retired by the first message under kid 2
    assert offline.send(reading(spec, "c1", _iv(offline), INTERVAL_S)[:2]) == []
    assert offline.counters["unknown_key"] == 2


def test_conflicting_record_with_same_sequence_is_rejected_with_an_ack(offline: Offline) -> None:
    spec = provision(offline.cfg, 1)[0]
    offline.send(reading(spec, "c1", _iv(offline), INTERVAL_S)[:2])
    spec.seq -= 1
    assert res(offline.send(reading(spec, "c1", _iv(offline), INTERVAL_S, imp_wh=5)[:2])) == ["conflict"]


def test_counters_must_not_decrease_unless_flagged(offline: Offline) -> None:
    spec = provision(offline.cfg, 1)[0]
    iv = _iv(offline)
    offline.send(reading(spec, "c1", iv, INTERVAL_S)[:2])
    spec.counter_imp -= 1000
    assert res(offline.send(reading(spec, "c1", iv, INTERVAL_S)[:2])) == ["counter_decrease"]
    spec.counter_imp -= 1000
    assert res(offline.send(reading(spec, "c1", iv, INTERVAL_S, flags=messages.FLAG_COUNTER_RESET)[:2])) == ["stored"]
    # Out of order: an older record arriving late must fit between its neighbours.
    late = MeterSpec(spec.meter, spec.kid, spec.key, boot=spec.boot, seq=1, counter_imp=10_100, counter_exp=5_020)
    assert res(offline.send(reading(late, "c1", iv, INTERVAL_S)[:2])) == ["stored"]


def test_range_checks(offline: Offline) -> None:
    spec = provision(offline.cfg, 1)[0]
    iv = _iv(offline)
    assert offline.send(reading(spec, "c1", iv + 5, INTERVAL_S)[:2]) == []  # future: not acked, may retry
    assert offline.counters["future_interval"] == 1
    assert res(offline.send(reading(spec, "c1", iv, INTERVAL_S, imp_wh=10 ** 8)[:2])) == ["energy_out_of_range"]
    spec.seq += 1
    msg = messages.reading(spec.meter, spec.kid, spec.boot, spec.seq, iv, 0, 10, 1, 1, spec.counter_imp + 1,
                           spec.counter_exp + 1, 0)
    out = offline.send(("tm/v1/c1/meters/m000/reading", messages.encode(msg, spec.key)))
    assert res(out) == ["time_out_of_range"]



def test_gap_record_after_an_outage_may_span_earlier_intervals(offline: Offline) -> None:
    """A meter back from a power cut sends one record from its last boundary to now: it starts
    intervals before its own, carries the partial flag, and is stored; unflagged it is refused."""
    spec = provision(offline.cfg, 1)[0]
    offline.conn.execute("UPDATE meters SET created = created - 86400")  # provisioned a day ago
    iv = _iv(offline)
    start = iv * INTERVAL_S - 2 * offline.cfg.ingest.time_slack_s  # well beyond the slack
    end = iv * INTERVAL_S + INTERVAL_S // 2
    hours = (end - start) / 3600
    big = int(offline.cfg.ingest.max_power_w * hours * 0.9)  # too much for one interval alone

    def gap(seq: int, flags: int, wh: int) -> tuple[str, bytes]:
        msg = messages.reading(spec.meter, spec.kid, spec.boot, seq, iv, start, end, wh, 0,
                               spec.counter_imp + wh, spec.counter_exp, flags)
        return ("tm/v1/c1/meters/m000/reading", messages.encode(msg, spec.key))

    assert res(offline.send(gap(10, 0, 1))) == ["time_out_of_range"]
    assert res(offline.send(gap(11, 0, big))) == ["energy_out_of_range"]
    assert res(offline.send(gap(12, messages.FLAG_PARTIAL, big))) == ["stored"]
    late_read = messages.reading(spec.meter, spec.kid, spec.boot, 14, iv, iv * INTERVAL_S,
                                 end + 3 * offline.cfg.ingest.time_slack_s, 10, 0, spec.counter_imp + big + 10,
                                 spec.counter_exp, messages.FLAG_PARTIAL)
    out = offline.send(("tm/v1/c1/meters/m000/reading", messages.encode(late_read, spec.key)))
    assert res(out) == ["stored"]  # closed long after its boundary: still its energy, flagged
    elsewhere = messages.reading(spec.meter, spec.kid, spec.boot, 15, iv, start - 10 * INTERVAL_S,
                                 start - 9 * INTERVAL_S, 1, 0, spec.counter_imp + big + 11,
                                 spec.counter_exp, messages.FLAG_PARTIAL)
    out = offline.send(("tm/v1/c1/meters/m000/reading", messages.encode(elsewhere, spec.key)))
    assert res(out) == ["time_out_of_range"]  # does not even touch its interval
    too_much = messages.reading(spec.meter, spec.kid, spec.boot, 16, iv, end - 60, end, big, 0,
                                spec.counter_imp + 2 * big, spec.counter_exp, messages.FLAG_PARTIAL)
    out = offline.send(("tm/v1/c1/meters/m000/reading", messages.encode(too_much, spec.key)))
    assert res(out) == ["energy_out_of_range"]

def test_wrong_community_and_gateway_kinds_are_rejected(offline: Offline) -> None:
    spec = provision(offline.cfg, 1)[0]
    topic, payload, _ = reading(spec, "c1", _iv(offline), INTERVAL_S)
    msg = messages.reading(spec.meter, spec.kid, 1, 99, _iv(offline), 0, 0, 0, 0, 0, 0, messages.FLAG_TIME_UNSYNCED)
    assert offline.send(("tm/v1/c2/meters/m000/reading", messages.encode(msg, spec.key))) == []
    ack = messages.encode(messages.ack(spec.meter, spec.kid, 1, 1, "stored"), spec.key)
    assert offline.send(("tm/v1/c1/meters/m000/ack", ack)) == []
    assert offline.counters["wrong_community"] == 1 and offline.counters["topic_mismatch"] == 1


def test_the_gateways_own_messages_on_the_uplink_are_refused_and_the_batch_is_kept(offline: Offline) -> None:
    # amqtt delivered the gateway's retained checkpoint to the uplink subscription: it has no
    # key id, and the whole batch around it failed (every meter resent, none was acked).
    spec = provision(offline.cfg, 1)[0]
    checkpoint = messages.encode(messages.checkpoint("gw", 3, "00" * 32, "sig"))
    gateway_status = messages.encode(messages.gateway_status(1, 1, _iv(offline), {}))
    out = offline.send((topics.checkpoint_topic("c1"), checkpoint), reading(spec, "c1", _iv(offline), INTERVAL_S)[:2],
                       (topics.gateway_status_topic("c1"), gateway_status))
    assert res(out) == ["stored"]
    assert offline.counters["topic_mismatch"] == 2
    assert offline.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 1


def test_an_internal_error_leaves_nothing_behind(offline: Offline, monkeypatch) -> None:  # noqa: ANN001
    spec = provision(offline.cfg, 1)[0]

    def boom(*args: object) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(offline.ingest, "_export", boom)
    assert offline.send(reading(spec, "c1", _iv(offline), INTERVAL_S)[:2]) == []
    assert offline.counters["internal_error"] == 1
    assert offline.conn.execute("SELECT COUNT(*) FROM leaves").fetchone()[0] == offline.ledger.size
    monkeypatch.undo()
    spec.seq -= 1
    assert res(offline.send(reading(spec, "c1", _iv(offline), INTERVAL_S)[:2])) == ["stored"]


def test_fair_queue_bounds_each_meter_and_serves_round_robin() -> None:
    async def main() -> None:
        dropped: list[str] = []
        q = FairQueue(per_meter=10, total=1000, on_drop=dropped.append)
        for i in range(500):
            q.put_nowait(("tm/v1/c1/meters/flood/reading", bytes([i % 256])))
        for m in ("a", "b", "c"):
            q.put_nowait((f"tm/v1/c1/meters/{m}/reading", b""))
        q.put_nowait(("garbage", b""))
        assert len(dropped) == 490 and q.qsize() == 14
        first = await q.get_batch(5)
        assert sorted(t.split("/")[4] if "/" in t else "" for t, _ in first) == ["", "a", "b", "c", "flood"]
        rest = await q.get_batch(100)
        assert len(rest) == 9 and q.qsize() == 0

    asyncio.run(main())


def _status(spec: MeterSpec, boot: int, n: int, online: int, size: int) -> tuple[str, bytes]:
    cp = {"size": size, "root": base64.b64encode(bytes([size]) * 32).decode()} if size else None
    msg = messages.status(spec.meter, spec.kid, boot, n, 0, online, 1, {}, cp)
    return topics.meter_topic("c1", spec.meter, "status"), messages.encode(msg, spec.key)


def _stored_status(off: Offline, meter: str) -> dict:
    return canonical.parse(off.conn.execute("SELECT body FROM meter_status WHERE meter=?", (meter,)).fetchone()[0].encode())


def test_a_last_will_never_replaces_a_newer_status(offline: Offline) -> None:
    """The will is composed at CONNECT (MQTT 3.1.1 §3.1.2.5), so its witnessed checkpoint and
    counters are as old as the connection: delivered after the meter's later statuses (it dropped
    off), it must not wipe the checkpoint they witnessed. A new boot's status is always taken."""
    spec = provision(offline.cfg, 1)[0]
    will = _status(spec, 1, 1, 0, 0)
    offline.send(_status(spec, 1, 2, 1, 39), _status(spec, 1, 3, 1, 123))
    offline.send(will)
    assert (_stored_status(offline, spec.meter)["n"], _stored_status(offline, spec.meter)["cp"]["size"]) == (3, 123)
    assert offline.counters["status_older"] == 1 and offline.counters["status"] == 2
    # Its "offline" is news all the same: the meter is gone until its next status.
    online = "SELECT online FROM meter_status WHERE meter=?"
    assert offline.conn.execute(online, (spec.meter,)).fetchone()[0] == 0
    offline.send(_status(spec, 1, 4, 1, 124))  # reconnected
    assert offline.conn.execute(online, (spec.meter,)).fetchone()[0] == 1
    offline.send(_status(spec, 2, 1, 1, 130))  # rebooted: its n starts again
    assert (_stored_status(offline, spec.meter)["boot"], _stored_status(offline, spec.meter)["cp"]["size"]) == (2, 130)


def test_an_unreadable_registry_refuses_the_message_and_keeps_the_decoder_alive(tmp_path) -> None:  # noqa: ANN001
    # The red-team replay removed the database under a running gateway: a key lookup that failed
    # with a disk I/O error killed the uplink pump, which then crash-looped.
    from collections import Counter

    from gateway.ingest.codec import KeyCache, MeterDecoder

    reg = Registry(str(tmp_path / "gw.db"))
    dev = reg.provision("m1", "c1")
    spec = MeterSpec("m1", dev.kid, dev.key)
    counts: Counter[str] = Counter()
    decoder = MeterDecoder(KeyCache(Registry(conn=reg.conn)), counts)
    topic, payload, _ = reading(spec, "c1", 100, INTERVAL_S)
    reg.conn.close()
    assert decoder(topic, payload) is None and counts == {"key_unavailable": 1}
    decoder.keys.registry = Registry(str(tmp_path / "gw.db"))  # the database is back
    assert decoder(topic, payload) is not None  # the failure was not cached
