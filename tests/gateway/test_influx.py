"""InfluxDB export against a real server that takes InfluxDB v2 writes (VictoriaMetrics), including
an outage: points buffer on disk in the outbox and arrive once the server is back."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.config import GatewayConfig
from gateway.daemon import GatewayThread
from protocols import messages
from sim_hardware.harness.mosquitto import MosquittoBroker
from sim_hardware.netutil import free_port, wait_for_port
from tests.gateway.conftest import first_point_clearing, provision, wait_until
from tests.gateway.meters import AckCollector, publisher, reading

pytestmark = pytest.mark.mosquitto


class Victoria:
    def __init__(self, data: Path) -> None:
        binary = shutil.which("victoria-metrics")
        if binary is None:
            pytest.fail("victoria-metrics is not installed (.ci/run installs it)")
        self.binary, self.data, self.port = binary, data, free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, f"-httpListenAddr=127.0.0.1:{self.port}",
                                      f"-storageDataPath={self.data}", "-search.latencyOffset=0s"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port("127.0.0.1", self.port, 30)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None

    def series(self, metric: str) -> list[dict]:
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).read()
        q = urllib.request.quote(f'{{__name__="{metric}"}}')
        # Readings are stamped with their interval's end, possibly ahead of now: widen the range.
        span = f"&start=0&end={int(time.time()) + 86400}"
        body = urllib.request.urlopen(f"{self.url}/api/v1/export?match[]={q}{span}", timeout=10).read().decode()
        return [json.loads(line) for line in body.splitlines() if line.strip()]


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[Victoria]:
    vm = Victoria(tmp_path / "vm")
    vm.start()
    try:
        yield vm
    finally:
        vm.stop()


def test_export_survives_a_server_outage(gw_config: GatewayConfig, mosquitto: MosquittoBroker, victoria: Victoria) -> None:
    gw_config.influx.enabled = True
    gw_config.influx.url = victoria.url
    gw_config.influx.flush_s = 0.2
    gw_config.influx.retry_max_s = 0.5
    specs = provision(gw_config, 20)
    gw = GatewayThread(gw_config, first_point_clearing).start()
    acks = AckCollector(mosquitto.host, mosquitto.port, "c1", {s.meter: s.key for s in specs})
    pub = publisher(mosquitto.host, mosquitto.port)
    iv = messages.interval_index(time.time(), gw_config.interval_s)
    exporter = gw.gateway.exporter

    def send(batch: list) -> None:  # noqa: ANN001
        keys = set()
        for spec in batch:
            topic, payload, key = reading(spec, "c1", iv, gw_config.interval_s, imp_wh=7)
            pub.publish(topic, payload, qos=1)
            keys.add(key)
        assert acks.wait_for(keys)

    try:
        send(specs[:10])
        assert wait_until(lambda: len(victoria.series("reading_imp_wh")) == 10)
        victoria.stop()  # the database goes away
        send(specs[10:])  # ... the gateway keeps storing and acking
        assert wait_until(lambda: gw.gateway.counters["influx_errors"] >= 2)
        assert exporter.pending() >= 10  # buffered on disk
        victoria.start()
        assert wait_until(lambda: exporter.pending() == 0, timeout=60)
        assert wait_until(lambda: len(victoria.series("reading_imp_wh")) == 20)
        points = victoria.series("reading_imp_wh")
        assert {p["metric"]["meter"] for p in points} == {s.meter for s in specs}
        assert all(p["values"] == [7] and p["metric"]["community"] == "c1" for p in points)
        assert victoria.series("price_price")  # clearing prices are exported too
    finally:
        pub.loop_stop()
        acks.close()
        gw.stop()
