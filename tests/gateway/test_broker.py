"""Integration against a real Mosquitto: the generated ACL enforced by the broker, verified ingest
over MQTT (forged, replayed and duplicate records), fairness under a flood, and the status
endpoint and retained status message."""

from __future__ import annotations

import json
import queue
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import paho.mqtt.client as mqtt
import pytest

from gateway.config import GatewayConfig
from gateway.daemon import GatewayThread
from protocols import messages, topics
from sim_hardware.harness.mosquitto import MosquittoBroker
from tests.gateway.conftest import Secured, backlog, first_point_clearing, provision, wait_until
from tests.gateway.meters import AckCollector, MeterSpec, publisher, reading

pytestmark = pytest.mark.mosquitto


def status(gw: GatewayThread, path: str = "/status") -> dict:
    port = gw.gateway.status_server.port  # type: ignore[union-attr]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return json.loads(r.read())


def _v5_client(broker: MosquittoBroker, user: str, password: str) -> tuple[mqtt.Client, queue.Queue]:
    events: queue.Queue = queue.Queue()
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{user}-v5", protocol=mqtt.MQTTv5)
    c.username_pw_set(user, password)
    c.on_connect = lambda cl, u, f, rc, p: events.put(("connect", rc.value))
    c.on_publish = lambda cl, u, mid, rc, p: events.put(("puback", rc.value))
    c.on_subscribe = lambda cl, u, mid, rcs, p: events.put(("suback", [r.value for r in rcs]))
    c.on_message = lambda cl, u, m: events.put(("message", m.topic))
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c, events


def _next(events: queue.Queue, kind: str, timeout: float = 10.0):  # noqa: ANN202
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            k, v = events.get(timeout=0.2)
        except queue.Empty:
            continue
        if k == kind:
            return v
    raise AssertionError(f"no {kind}")


def test_broker_enforces_the_generated_acl(secured: Secured) -> None:
    cfg, broker, meters = secured.cfg, secured.broker, secured.meters
    (a, a_pw), (b, _) = meters["ma"], meters["mb"]
    gw = GatewayThread(cfg, first_point_clearing).start()
    try:
        client, events = _v5_client(broker, "ma", a_pw)
        assert _next(events, "connect") == 0
        # Mosquitto grants any subscription but checks the read ACL on every delivery.
        client.subscribe([(topics.meter_topic("c1", "ma", "ack"), 1), (topics.meter_topic("c1", "mb", "ack"), 1)])
        _next(events, "suback")
        iv = messages.interval_index(time.time(), cfg.interval_s)
        # A publishing as B: the broker refuses (MQTT 5 PUBACK 0x87), even with B's own valid tag.
        b_topic, b_payload, b_key = reading(b, "c1", iv, cfg.interval_s)
        client.publish(b_topic, b_payload, qos=1)
        assert _next(events, "puback") == 135
        # A on its own topic: accepted, stored, and A reads its ack.
        a_topic, a_payload, _ = reading(a, "c1", iv, cfg.interval_s)
        client.publish(a_topic, a_payload, qos=1)
        assert _next(events, "puback") == 0
        assert _next(events, "message") == topics.meter_topic("c1", "ma", "ack")
        assert wait_until(lambda: status(gw)["counters"].get("stored") == 1)
        assert status(gw)["counters"].get("bad_tag") is None  # B's record never reached the gateway
        # B publishing for itself is fine; its ack goes to B, and A (subscribed to it) never sees it.
        b_client, b_events = _v5_client(broker, "mb", meters["mb"][1])
        b_client.subscribe(topics.meter_topic("c1", "mb", "ack"), 1)
        _next(b_events, "suback")
        b_client.publish(b_topic, b_payload, qos=1)
        assert _next(b_events, "message") == topics.meter_topic("c1", "mb", "ack")
        assert wait_until(lambda: status(gw)["counters"].get("stored") == 2)
        time.sleep(0.5)
        leaked = [v for k, v in list(events.queue) if k == "message"]
        assert leaked == []
        # A may not publish on gateway topics either.
        client.publish(topics.meter_topic("c1", "mb", "award"), b"x", qos=1)
        assert _next(events, "puback") == 135
        client.publish(topics.checkpoint_topic("c1"), b"x", qos=1)
        assert _next(events, "puback") == 135
        b_client.loop_stop()
        client.loop_stop()
        client.disconnect()
        # Wrong password and anonymous logins are refused.
        bad, bad_events = _v5_client(broker, "ma", "wrong")
        assert _next(bad_events, "connect") == 135
        bad.loop_stop()
        anon = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv311)
        with pytest.raises(Exception):  # noqa: B017 - paho raises or reports refusal
            anon.connect(broker.host, broker.port)
            rc = anon.loop(timeout=2.0)
            assert anon.is_connected(), rc
            raise ConnectionRefusedError
    finally:
        gw.stop()


@pytest.fixture
def running(gw_config: GatewayConfig, mosquitto: MosquittoBroker) -> Iterator[tuple[GatewayThread, list[MeterSpec], AckCollector, mqtt.Client]]:
    specs = provision(gw_config, 20)
    gw = GatewayThread(gw_config, first_point_clearing).start()
    acks = AckCollector(mosquitto.host, mosquitto.port, "c1", {s.meter: s.key for s in specs})
    pub = publisher(mosquitto.host, mosquitto.port)
    try:
        yield gw, specs, acks, pub
    finally:
        pub.loop_stop()
        acks.close()
        gw.stop()


def test_forged_replayed_and_duplicate_records_over_mqtt(running, gw_config: GatewayConfig) -> None:  # noqa: ANN001
    gw, specs, acks, pub = running
    iv = messages.interval_index(time.time(), gw_config.interval_s)
    topic, payload, key = reading(specs[0], "c1", iv, gw_config.interval_s)
    pub.publish(topic, payload.replace(b'"imp_wh":100', b'"imp_wh":101'), qos=1)  # forged body
    pub.publish(topic, payload[:-4] + b"0000", qos=1)  # forged tag
    pub.publish(topics.meter_topic("c1", specs[1].meter, "reading"), payload, qos=1)  # replayed as another meter
    for _ in range(3):
        pub.publish(topic, payload, qos=1)  # the record, then two replays of it
    assert acks.wait_for({key})
    assert wait_until(lambda: status(gw)["counters"].get("duplicate") == 2)
    counters = status(gw)["counters"]
    assert counters["bad_tag"] == 3 and counters["stored"] == 1
    assert wait_until(lambda: acks.count == 3)  # each copy acked (the pump sends them after the commit)
    assert acks.acks[key] in ("stored", "duplicate")
    conn = gw.gateway.conn
    assert conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 1


def test_a_flooding_meter_does_not_starve_the_others(running, gw_config: GatewayConfig) -> None:  # noqa: ANN001
    gw, specs, acks, pub = running
    iv = messages.interval_index(time.time(), gw_config.interval_s)
    flood_topic = topics.meter_topic("c1", specs[0].meter, "reading")
    flooder = publisher(gw_config.mqtt.host, gw_config.mqtt.port)
    for i in range(20_000):
        flooder.publish(flood_topic, b"junk %d" % i, qos=0)
    wanted = set()
    for spec in specs[1:]:
        topic, payload, key = reading(spec, "c1", iv, gw_config.interval_s)
        pub.publish(topic, payload, qos=1)
        wanted.add(key)
    assert acks.wait_for(wanted, timeout=60)
    flooder.loop_stop()
    assert wait_until(lambda: status(gw)["health"] == "ok")


def test_status_endpoint_and_retained_status(running, gw_config: GatewayConfig, mosquitto: MosquittoBroker) -> None:  # noqa: ANN001
    gw, *_ = running
    assert wait_until(lambda: status(gw)["checkpoint"] is not None)  # signed at the first tick
    snap = status(gw)
    assert snap["health"] == "ok" and snap["community"] == "c1" and snap["mqtt_connected"]
    assert snap["interval"] == messages.interval_index(time.time(), gw_config.interval_s)
    assert snap["checkpoint"]["size"] >= 1
    assert status(gw, "/health") == {"health": "ok", "ok": True, "reasons": []}
    with pytest.raises(urllib.error.HTTPError):
        status(gw, "/nope")
    got: queue.Queue = queue.Queue()
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
    sub.on_message = lambda c, u, m: got.put(m)
    sub.connect(mosquitto.host, mosquitto.port)
    sub.subscribe(topics.gateway_status_topic("c1"), 1)
    sub.loop_start()
    m = got.get(timeout=10)
    assert m.retain
    _, _, body, _ = messages.decode(m.topic, m.payload)
    assert body["online"] == 1
    gw.stop()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        _, _, body, _ = messages.decode(m.topic, got.get(timeout=10).payload)
        if body["online"] == 0:
            break
    assert body["online"] == 0
    sub.loop_stop()


def test_records_queued_while_the_gateway_was_down_are_taken_on_restart(gw_config: GatewayConfig, mosquitto: MosquittoBroker) -> None:
    """The broker holds QoS 1 messages for the gateway's persistent session; the gateway must
    take them the moment it reconnects (not only what arrives after it subscribed)."""
    with backlog(gw_config, mosquitto, meters=50, per_meter=1) as (acks, wanted):
        gw = GatewayThread(gw_config, first_point_clearing).start()
        try:
            assert acks.wait_for(wanted, timeout=30)  # nothing was published again
        finally:
            gw.stop()


def test_the_broker_gives_each_meter_only_its_own_cfg_topics(secured: Secured) -> None:
    """Remote configuration (protocols/remote.py): only the tool's login (`<gateway user>-ota`)
    commands meters; a meter reads only its own commands and answers only on its own topic."""
    from gateway.mosquitto_conf import ota_login
    from protocols import remote

    broker, meters = secured.broker, secured.meters
    ma, events = _v5_client(broker, "ma", meters["ma"][1])
    tool, tool_events = _v5_client(broker, ota_login("gateway"), "gw-secret")
    try:
        assert _next(events, "connect") == 0 and _next(tool_events, "connect") == 0
        ma.subscribe([(remote.topic("c1", "ma", "down"), 1), (remote.topic("c1", "mb", "down"), 1)])
        _next(events, "suback")
        tool.subscribe(f"{topics.ROOT}c1/cfg/+/up", 1)
        _next(tool_events, "suback")
        for meter in ("mb", "ma"):  # the tool may command every meter
            tool.publish(remote.topic("c1", meter, "down"), b"x", qos=1)
            assert _next(tool_events, "puback") == 0
        assert _next(events, "message") == remote.topic("c1", "ma", "down")
        for t, want in ((remote.topic("c1", "mb", "up"), 135), (remote.topic("c1", "mb", "down"), 135),
                        (remote.topic("c1", "ma", "down"), 135), (remote.topic("c1", "ma", "up"), 0)):
            ma.publish(t, b"x", qos=1)
            assert _next(events, "puback") == want, t
        assert _next(tool_events, "message") == remote.topic("c1", "ma", "up")
        time.sleep(0.5)
        assert [v for k, v in list(events.queue) if k == "message"] == []  # mb's command unseen
        tool.publish(topics.meter_topic("c1", "ma", "award"), b"x", qos=1)  # nothing of the gateway's
        assert _next(tool_events, "puback") == 135
    finally:
        for c in (ma, tool):
            c.loop_stop()
            c.disconnect()
