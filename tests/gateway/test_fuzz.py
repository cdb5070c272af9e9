"""Fuzz: hypothesis-generated and mutated payloads on every topic the gateway subscribes to,
through a real broker, never stop the daemon; afterwards it still stores and acks a good record."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config import GatewayConfig
from gateway.daemon import GatewayThread
from protocols import messages, topics
from sim_hardware.harness.mosquitto import MosquittoBroker
from tests.gateway.conftest import first_point_clearing, provision
from tests.gateway.meters import AckCollector, MeterSpec, bid, publisher, reading

pytestmark = pytest.mark.mosquitto
KINDS = list(topics.METER_UP)


def mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    def flip(data: bytes, pos: int, bit: int) -> bytes:
        if not data:
            return data
        b = bytearray(data)
        b[pos % len(b)] ^= 1 << bit
        return bytes(b)

    return st.one_of(
        st.builds(flip, st.just(seed), st.integers(0, 10_000), st.integers(0, 7)),
        st.builds(lambda n: seed[:n], st.integers(0, len(seed))),
        st.builds(lambda n, junk: seed[:n] + junk + seed[n:], st.integers(0, len(seed)), st.binary(max_size=40)),
        st.builds(lambda s: seed.replace(b"100", s.encode()), st.sampled_from(["-1", "1e3", "1.5", "null", '"x"', "9" * 30])),
    )


def test_fuzzed_payloads_never_stop_the_daemon(gw_config: GatewayConfig, mosquitto: MosquittoBroker) -> None:
    spec = provision(gw_config, 1)[0]
    gw = GatewayThread(gw_config, first_point_clearing).start()
    pub = publisher(mosquitto.host, mosquitto.port)
    iv = messages.interval_index(time.time(), gw_config.interval_s)
    seeds = [reading(MeterSpec(spec.meter, spec.kid, spec.key, seq=500), "c1", iv, gw_config.interval_s)[1],
             bid(spec, "c1", iv + 2, 1, [[10, 100], [20, 200]], int(time.time()))[1],
             messages.encode(messages.status(spec.meter, spec.kid, 1, 1, int(time.time()), 1, 1, {"x": 1}), spec.key)]
    sent = [0]
    meter_ids = st.one_of(st.just(spec.meter), st.text(
        # Topic levels the broker accepts (it disconnects a client over control characters).
        st.characters(categories=("L", "N", "P", "S"), exclude_characters="/+#"), min_size=1, max_size=40))

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(KINDS), meter_ids,
           st.one_of(st.binary(max_size=5000), *(mutations(s) for s in seeds), st.builds(
               lambda d: json.dumps(d).encode(), st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=8))))
    def fuzz(kind: str, meter: str, payload: bytes) -> None:
        topic = f"tm/v1/c1/meters/{meter}/{kind}"
        pub.publish(topic, payload, qos=0)
        sent[0] += 1

    try:
        fuzz()
        # The daemon is alive, has seen the junk, and still does its job.
        acks = AckCollector(mosquitto.host, mosquitto.port, "c1", {spec.meter: spec.key})
        topic, payload, key = reading(spec, "c1", iv, gw_config.interval_s)
        # Sent again until acked, as a meter does: the junk above came under the same meter id
        # and may still fill that meter's share of the queue, which drops what does not fit.
        deadline = time.monotonic() + 60
        pub.publish(topic, payload, qos=1)
        while not acks.wait_for({key}, timeout=2):
            assert time.monotonic() < deadline, "the daemon no longer acks a good reading"
            pub.publish(topic, payload, qos=1)
        port = gw.gateway.status_server.port  # type: ignore[union-attr]
        snap = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5).read())
        assert snap["health"] == "ok"
        assert snap["counters"].get("internal_error") is None
        assert sum(snap["counters"].values()) >= sent[0] // 2  # most of the junk was seen and counted
        acks.close()
    finally:
        pub.loop_stop()
        gw.stop()
    assert gw.error is None
