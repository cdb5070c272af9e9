"""Prometheus /metrics of the real daemon (`tmeter gateway run`, real Mosquitto), scraped by a real
scraper: VictoriaMetrics reads /metrics on a one-second scrape interval and answers PromQL over
/api/v1/query with what the database holds. The exposition parses with prometheus-client's own
parser; every daemon counter lands in a family chosen on purpose; the Grafana dashboard
(deploy/grafana/tmeter.json) asks only for metrics the daemon exports and for measurements and
fields the InfluxDB exporter writes."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import GatewayConfig
from gateway.daemon import Gateway
from gateway.ops import metrics
from protocols import messages
from sim_hardware.harness.mosquitto import MosquittoBroker
from sim_hardware.harness.redteam import health, start, stop
from sim_hardware.netutil import wait_for_port
from tests.gateway.conftest import make_config, wait_until
from tests.gateway.meters import bid
from tests.gateway.test_influx import Victoria
from tests.gateway.test_storage_faults import Meters, gateway_toml

ROOT = Path(__file__).parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "tmeter.json"


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """/metrics parsed by prometheus-client: sample name -> labels -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def one(db: str, sql: str) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


class Scraping(Victoria):
    """VictoriaMetrics as Prometheus: it scrapes the daemon's /metrics every second."""

    def __init__(self, data: Path, target_port: int) -> None:
        super().__init__(data)
        data.mkdir(parents=True, exist_ok=True)
        self.config = data.parent / "scrape.yml"
        self.config.write_text("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tmeter\n"
                               f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n")

    def start(self) -> None:
        self.proc = subprocess.Popen([self.binary, f"-httpListenAddr=127.0.0.1:{self.port}",
                                      f"-storageDataPath={self.data}", f"-promscrape.config={self.config}",
                                      "-search.latencyOffset=0s"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port("127.0.0.1", self.port, 30)

    def query(self, promql: str) -> list[dict]:
        url = f"{self.url}/api/v1/query?query={urllib.parse.quote(promql)}"
        with urllib.request.urlopen(url, timeout=10) as r:
            doc = json.loads(r.read())
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if len(result) == 1 else None


@pytest.mark.mosquitto
def test_victoriametrics_scrapes_what_the_database_holds(tmp_path: Path, mosquitto: MosquittoBroker) -> None:
    cfg = make_config(tmp_path, mosquitto, interval_s=4, gate_closure_s=1)
    cfg.settlement.grace_s = 1
    toml, port = gateway_toml(cfg, tmp_path / "gateway.toml")
    meters = Meters(cfg, mosquitto, 3)
    proc = start(toml, tmp_path / "gateway.log")
    vm = Scraping(tmp_path / "vm", port)
    try:
        assert wait_until(lambda: health(port)[0] == 200, 30), health(port)
        iv = messages.interval_index(time.time(), cfg.interval_s)
        for i, spec in enumerate(meters.specs):  # bids two intervals ahead (its gate is >= 3 s away): cleared
            meters.pub.publish(*bid(spec, "c1", iv + 2, 0, [[40 - 30 * (i % 2), 100_000], [60, 200_000]],
                                    int(time.time())), qos=1)
        for _ in range(2):
            meters.produce_and_send()
            assert meters.resend_until_acked()
        meters.pub.publish("tm/v1/c1/meters/m000/reading", b"not a signed reading", qos=1).wait_for_publish(10)
        assert wait_until(lambda: scrape(port).get("tmeter_intervals", {}).get((("state", "settled"),), 0) >= 1, 30)
        assert wait_until(lambda: scrape(port)["tmeter_clearing_duration_seconds_count"][()] >= 1, 30)
        assert wait_until(lambda: sum(scrape(port).get("tmeter_ingest_rejected_total", {}).values()) >= 1, 15)

        m = scrape(port)
        readings = one(cfg.db, "SELECT COUNT(*) FROM readings")
        assert readings == 6 and m["tmeter_ingest_messages_total"][(("outcome", "stored"),)] == readings
        assert m["tmeter_ingest_messages_total"][(("outcome", "bid"),)] == 3
        assert m["tmeter_healthy"][()] == 1 and m["tmeter_problem"][(("code", "storage"),)] == 0
        ages = m["tmeter_meter_last_seen_age_seconds"]
        assert {dict(k)["meter"] for k in ages} == {s.meter for s in meters.specs}
        assert all(0 <= age < 60 for age in ages.values())
        assert m["tmeter_ledger_leaves"][()] >= readings + 3 and m["tmeter_ledger_checkpoints"][()] >= 1
        assert 0 <= m["tmeter_settlement_lag_seconds"][()] < 30
        assert m["tmeter_ingest_queue_messages"][()] == 0
        assert m["tmeter_meters"][()] == 3 and m["tmeter_database_readable"][()] == 1
        assert all(name.startswith(("tmeter_", "process_")) for name in m)

        vm.start()
        stored = 'tmeter_ingest_messages_total{job="tmeter", outcome="stored"}'
        assert wait_until(lambda: vm.value(stored) is not None, 30), vm.query(stored)
        assert vm.value(stored) == readings == one(cfg.db, "SELECT COUNT(*) FROM readings")
        assert vm.value("count(tmeter_meter_last_seen_age_seconds)") == 3
        leaves = vm.value("max_over_time(tmeter_ledger_leaves[1m])")
        assert leaves is not None and leaves <= one(cfg.db, "SELECT COUNT(*) FROM leaves")
        assert stop(proc) == 0
    finally:
        vm.stop()
        meters.close()
        if proc.poll() is None:
            proc.kill()


def exported_names(cfg: GatewayConfig) -> set[str]:
    """Every sample name a scrape of a fresh daemon gives (the real collector over a real database,
    opened as the daemon opens it), with the families that only exist once something happened."""
    gw = Gateway(cfg)
    gw._open()  # noqa: SLF001 - the daemon's own start-up, without a broker
    try:
        body, _ = asyncio.run(metrics.Scraper(gw)())
    finally:
        gw.conn.close()
    names = {"tmeter_clearing_last_duration_seconds"}  # after the first clearing
    suffixes = {"counter": ["_total"], "summary": ["_sum", "_count"], "info": ["_info"]}
    for fam in text_string_to_metric_families(body.decode()):  # families without samples yet too
        names |= {s.name for s in fam.samples} | {fam.name + x for x in suffixes.get(fam.type, [""])}
    return names


def influx_fields() -> dict[str, set[str]]:
    """Measurement -> fields, from lines the exporter itself builds."""
    from gateway.ops.influx import line_builder

    build = line_builder("c1")
    samples = {
        "reading": {"meter": "m1", "imp_wh": 1, "exp_wh": 2, "flags": 0, "t1": 1},
        "price": {"iv": 1, "price": 2, "mech": "uniform", "ts": 1},
        "award": {"meter": "m1", "q_wh": 1, "ts": 1},
        "settlement": {"meter": "m1", "rev": 0, "award_wh": 1, "award_amount": 1, "deviation_amount": 1,
                       "share_amount": 1, "amount": 1, "ts": 1},
    }
    out = {}
    for kind, fields in samples.items():
        line = build(kind, fields)
        assert line is not None
        measurement, rest = line.split(",", 1)
        out[measurement] = {kv.split("=", 1)[0] for kv in rest.split(" ")[1].split(",")}
    return out


def targets(panels: list[dict]) -> list[dict]:
    out = []
    for p in panels:
        out.extend(targets(p.get("panels", [])))
        out.extend(dict(t, panel=p["title"], datasource=t.get("datasource", p.get("datasource"))) for t in
                   p.get("targets", []))
    return out


def test_the_grafana_dashboard_asks_for_what_is_exported(tmp_path: Path) -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["schemaVersion"] >= 39 and board["uid"] and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["prometheus"]["type"] == "datasource" and variables["prometheus"]["query"] == "prometheus"
    assert variables["influxdb"]["type"] == "datasource" and variables["influxdb"]["query"] == "influxdb"
    names, fields = exported_names(make_config(tmp_path, None)), influx_fields()
    prom = [t for t in targets(board["panels"]) if t["datasource"]["uid"] == "${prometheus}"]
    flux = [t for t in targets(board["panels"]) if t["datasource"]["uid"] == "${influxdb}"]
    assert len(prom) >= 12 and len(flux) >= 4
    for t in prom:
        used = set(re.findall(r"\b(?:tmeter|process)_[a-z0-9_]+", t["expr"]))
        assert used and used <= names, (t["panel"], used - names)
    for t in flux:
        measurement = re.findall(r'r\._measurement == "([a-z_]+)"', t["query"])
        field = re.findall(r'r\._field == "([a-z_]+)"', t["query"])
        assert len(measurement) == 1 and measurement[0] in fields, (t["panel"], measurement)
        assert field and set(field) <= fields[measurement[0]], (t["panel"], field)
    # Every metric family the daemon exports is on the dashboard somewhere.
    shown = {n for t in prom for n in re.findall(r"\btmeter_[a-z0-9_]+", t["expr"])}
    families = {re.sub(r"_(total|sum|count|info)$", "", n) for n in names if n.startswith("tmeter_")}
    assert families <= {re.sub(r"_(total|sum|count|info)$", "", n) for n in shown}, families - shown
    assert set(fields) == {re.findall(r'r\._measurement == "([a-z_]+)"', t["query"])[0] for t in flux}


def test_every_counter_of_the_daemon_is_in_a_family_on_purpose() -> None:
    """A counter named in gateway/ (counters["x"]) is an accepted outcome or an event; anything
    else would be shown as an ingest rejection reason, so a new operational counter fails here
    until it is added to metrics.EVENTS (or metrics.ACCEPTED)."""
    named = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        named |= set(re.findall(r'(?:counters|counts)\["([a-z_]+)"\]', path.read_text()))
    refused = {"wrong_community", "topic_mismatch", "internal_error", "queue_full", "store_refused",
               "store_failed", "bad_topic"}  # message-level: a message that was not stored
    assert named - refused <= metrics.ACCEPTED | metrics.EVENTS, named - refused - metrics.ACCEPTED - metrics.EVENTS
    assert metrics.family("stored") == "accepted" and metrics.family("bad_tag") == "rejected"
    assert metrics.family("cleared") == "event"
