"""Gateway ingest throughput against Mosquitto's own delivery rate, through a real broker.

For N simulated meters (default 1,000), every meter's readings are encoded and tagged up front.
The same messages are then published twice, by a separate process, while the consumer is
offline with a persistent session (QoS 1), so the broker holds them; then the consumer connects
and takes the backlog -- the situation after a gateway restart, and a measurement in which the
publisher's own cost does not count:

1. a bare subscriber (paho, QoS 1, counting messages): Mosquitto's delivery rate;
2. the gateway daemon (`tmeter gateway run`, its own process, SQLite synchronous=FULL):
   verified, stored with their ledger leaves, and acknowledged. Its rate counts "stored" acks
   received by a subscriber on every meter's ack topic (what the meters would see), and the
   database is checked to hold every reading.

Both rates are messages / (last delivery - first delivery). The ratio gateway/broker is the
figure of merit; goals: >= 0.5 and >= 2,000 readings/s.

    python3 bench/ingest.py [--meters 1000] [--per-meter 10]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402

from gateway.registry import Registry  # noqa: E402
from protocols import messages, topics  # noqa: E402
from sim_hardware.mosquitto import MosquittoBroker  # noqa: E402
from sim_hardware.netutil import free_port  # noqa: E402

COMMUNITY = "c1"
INTERVAL_S = 900
PUBLISHER_CONNECTIONS = 4


def make_messages(db: Path, meters: int, per_meter: int) -> list[tuple[str, bytes]]:
    reg = Registry(db)
    keys = {}
    for i in range(meters):
        dev = reg.provision(f"m{i:04d}", COMMUNITY)
        keys[dev.meter] = (dev.kid, dev.key)
    reg.close()
    iv = messages.interval_index(time.time(), INTERVAL_S)
    out = []
    for seq in range(1, per_meter + 1):  # interleaved: every meter's reading k, then k + 1
        for meter, (kid, key) in keys.items():
            msg = messages.reading(meter, kid, 1, seq, iv, iv * INTERVAL_S, (iv + 1) * INTERVAL_S, 100, 10,
                                   1000 + 100 * seq, 500 + 10 * seq, 0)
            out.append((topics.meter_topic(COMMUNITY, meter, "reading"), messages.encode(msg, key)))
    return out


def publish_all(port: int, msgs: list[tuple[str, bytes]]) -> None:
    clients = []
    for i in range(PUBLISHER_CONNECTIONS):
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{i}-{os.getpid()}")
        c.max_inflight_messages_set(1000)
        c.max_queued_messages_set(0)
        c.connect("127.0.0.1", port)
        c.loop_start()
        clients.append(c)
    infos = [clients[i % len(clients)].publish(t, p, qos=1) for i, (t, p) in enumerate(msgs)]
    for info in infos:
        info.wait_for_publish(120)
    for c in clients:
        c.loop_stop()
        c.disconnect()


def publish(port: int, msgs: list[tuple[str, bytes]]) -> None:
    """Publish from another process, so this one's interpreter is not part of the numbers."""
    proc = mp.Process(target=publish_all, args=(port, msgs))
    proc.start()
    proc.join(300)


class Counter:
    """Counts messages on a filter from the first to the last one wanted."""

    def __init__(self, port: int, topic_filter: str, want: int, client_id: str, check=None) -> None:  # noqa: ANN001
        self.port, self.filter, self.want, self.check = port, topic_filter, want, check
        self.n, self.first, self.last = 0, 0.0, 0.0
        self.done = threading.Event()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.c.on_message = self._on

    def connect(self) -> None:
        subscribed = threading.Event()
        self.c.on_subscribe = lambda *a: subscribed.set()
        self.c.connect("127.0.0.1", self.port)
        self.c.subscribe(self.filter, 1)
        self.c.loop_start()
        subscribed.wait(10)

    def _on(self, c: mqtt.Client, u: object, m: mqtt.MQTTMessage) -> None:
        if self.check is None or self.check(m):
            self.n += 1
            self.last = time.time()
            if self.n == 1:
                self.first = self.last
            if self.n >= self.want:
                self.done.set()

    def rate(self, timeout: float) -> float:
        if not self.done.wait(timeout):
            raise RuntimeError(f"only {self.n} of {self.want} delivered in {timeout} s")
        self.c.loop_stop()
        self.c.disconnect()
        return (self.want - 1) / (self.last - self.first)


def broker_rate(port: int, msgs: list[tuple[str, bytes]]) -> float:
    bare = Counter(port, topics.meter_filter(COMMUNITY, "reading"), len(msgs), "bench-bare")
    bare.connect()  # create the persistent session ...
    bare.c.loop_stop()
    bare.c.disconnect()  # ... go offline ...
    publish(port, msgs)  # ... let the broker queue everything ...
    bare.connect()  # ... and take the backlog
    return bare.rate(120)


def start_gateway(work: Path, port: int, ack_qos: int = 1) -> tuple[subprocess.Popen[bytes], int]:
    http = free_port()
    toml = work / "gateway.toml"
    toml.write_text(f'community = "{COMMUNITY}"\ndb = "{work / "gateway.db"}"\ninterval_s = {INTERVAL_S}\n'
                    f'[mqtt]\nport = {port}\nclient_id = "bench-gateway"\n[status]\nhttp_port = {http}\n'
                    f'[ingest]\nack_qos = {ack_qos}\n')
    proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "gateway", "run", "--config", str(toml),
                             "--log-level", "ERROR"], cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            snap = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{http}/status", timeout=1).read())
            if snap["health"] == "ok":
                return proc, http
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("gateway did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--meters", type=int, default=1000)
    ap.add_argument("--per-meter", type=int, default=10)
    ap.add_argument("--ack-qos", type=int, choices=(0, 1), default=1, help="the gateway's ingest.ack_qos")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON too")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tmeter-bench-ingest-"))
    (work / "mq").mkdir()
    msgs = make_messages(work / "gateway.db", args.meters, args.per_meter)
    n = len(msgs)
    with MosquittoBroker(workdir=work / "mq") as broker:
        b_rate = broker_rate(broker.port, msgs)
        gw, _ = start_gateway(work, broker.port)  # creates the gateway's persistent session
        stop_gateway(gw)
        acks = Counter(broker.port, topics.meter_filter(COMMUNITY, "ack"), n, "bench-acks",
                       check=lambda m: b'"res":"stored"' in m.payload)
        acks.connect()
        publish(broker.port, msgs)
        gw, _ = start_gateway(work, broker.port, args.ack_qos)
        try:
            g_rate = acks.rate(300)
        finally:
            stop_gateway(gw)
    in_db = sqlite3.connect(work / "gateway.db").execute("SELECT COUNT(*) FROM readings").fetchone()[0]
    ratio = g_rate / b_rate
    report(args, n, b_rate, g_rate, ratio, in_db)
    if args.json:
        print(json.dumps({"meters": args.meters, "messages": n, "ack_qos": args.ack_qos, "broker_rate": b_rate,
                          "gateway_rate": g_rate, "ratio": ratio, "stored": in_db}))
    return 0 if in_db == n else 1


def stop_gateway(gw: subprocess.Popen[bytes]) -> None:
    gw.send_signal(signal.SIGTERM)
    gw.wait(60)


def report(args: argparse.Namespace, n: int, broker_rate: float, gateway_rate: float, ratio: float, in_db: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Ingest: {args.meters} meters, {n} signed readings, real Mosquitto, acks QoS {args.ack_qos}")
    table.add_column("path")
    table.add_column("readings/s", justify="right")
    table.add_column("goal", justify="right")
    table.add_row("Mosquitto backlog -> bare subscriber (paho, QoS 1)", f"{broker_rate:,.0f}", "")
    table.add_row("backlog -> gateway: verified + stored (FULL) + acked", f"{gateway_rate:,.0f}", ">= 2,000")
    table.add_row("ratio gateway / broker", f"{ratio:.2f}", ">= 0.50")
    table.add_row("readings in the database", f"{in_db:,}", f"{n:,}")
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
