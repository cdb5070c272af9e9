"""Gateway ingest throughput against Mosquitto's own delivery rate, through a real broker.

For N simulated meters (default 1,000), every meter's readings are encoded and tagged up front.
The same messages are then published once for each consumer, by a separate process, while it is
offline with a persistent session (QoS 1), so the broker holds them; then the consumer connects
and takes the backlog -- the situation after a gateway restart, and a measurement in which the
publisher's own cost does not count:

1. a bare subscriber (paho as it comes, QoS 1, counting messages): Mosquitto's delivery rate
   to a Python client, the goal's peer;
2. `mosquitto_sub` (C, QoS 1, writing a timestamp per message), for comparison only: how much
   faster the broker delivers to a client that is not Python;
3. the gateway daemon (`tmeter gateway run`, its own processes, SQLite synchronous=FULL):
   verified, stored with their ledger leaves, and acknowledged. Its rate counts "stored" acks
   as they reach a subscriber on every meter's ack topic (what the meters would see), and the
   database is checked to hold every reading. That observer is `mosquitto_sub` writing to a
   file: on the meters' side of the broker in real life, it should take as little of the
   gateway's CPU here as it can (a paho observer took a third of a core at these rates).

Rates are messages / (last delivery - first delivery). The ratio gateway/broker is the figure of
merit, goal >= 0.5; the three are measured in turn, --repeat times, and the median ratio counts
(a shared machine's load moves all alike). The gateway is then measured once more with it and
its pumps pinned to one core (sched_setaffinity), goal >= 2,000 readings/s.

    python3 bench/ingest.py [--meters 1000] [--per-meter 10] [--repeat 5] [--ack-qos 0|1] [--json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
import psutil  # noqa: E402

from gateway.config import IngestConfig  # noqa: E402
from gateway.registry import Registry  # noqa: E402
from protocols import messages, topics  # noqa: E402
from sim_hardware.harness.mosquitto import MosquittoBroker  # noqa: E402
from sim_hardware.netutil import free_port  # noqa: E402

COMMUNITY = "c1"
INTERVAL_S = 900
PUBLISHER_CONNECTIONS = 4
STORED = b'"res":"stored"'


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


class BareSubscriber:
    """A paho subscriber that only counts messages, from the first to the last one wanted."""

    def __init__(self, port: int, topic_filter: str, want: int, client_id: str) -> None:
        self.port, self.filter, self.want = port, topic_filter, want
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
        self.n += 1
        self.last = time.time()
        if self.n == 1:
            self.first = self.last
        if self.n >= self.want:
            self.done.set()

    def rate(self, timeout: float) -> float:
        if not self.done.wait(timeout):
            raise RuntimeError(f"only {self.n} of {self.want} delivered in {timeout} s")
        # The session stays, subscribed to nothing: later runs' messages do not queue for it.
        unsubscribed = threading.Event()
        self.c.on_unsubscribe = lambda *a: unsubscribed.set()
        self.c.unsubscribe(self.filter)
        unsubscribed.wait(10)
        self.c.loop_stop()
        self.c.disconnect()
        return (self.want - 1) / (self.last - self.first)


def broker_rate(port: int, msgs: list[tuple[str, bytes]], run: int) -> float:
    bare = BareSubscriber(port, topics.meter_filter(COMMUNITY, "reading"), len(msgs), f"bench-bare-{run}")
    bare.connect()  # create the persistent session ...
    bare.c.loop_stop()
    bare.c.disconnect()  # ... go offline ...
    publish(port, msgs)  # ... let the broker queue everything ...
    bare.connect()  # ... and take the backlog
    return bare.rate(120)


def c_client_rate(port: int, msgs: list[tuple[str, bytes]], run: int, log: Path) -> float:
    """The same backlog taken by `mosquitto_sub` (C, QoS 1, a timestamp line per message): not
    the goal's peer (the gateway is Python), shown so the ratio is read against a C client too."""
    sub = ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-i", f"bench-c-{run}", "-q", "1",
           "-t", topics.meter_filter(COMMUNITY, "reading")]
    subprocess.run([*sub, "-c", "-E"], check=True, timeout=30)  # the persistent session, offline
    publish(port, msgs)
    with log.open("wb") as out:
        subprocess.run([*sub, "-c", "-C", str(len(msgs)), "-F", "%U"], stdout=out, check=True, timeout=120)
    subprocess.run([*sub, "-E"], check=True, timeout=30)  # a clean session ends the persistent one
    times = [float(t) for t in log.read_bytes().split()]
    return (len(times) - 1) / (times[-1] - times[0])


class AckObserver:
    """`mosquitto_sub` on every meter's ack topic, writing each ack with its arrival time to a
    file; this process only looks at that file now and then, so it takes no CPU from the
    gateway per ack."""

    POLL_S = 0.05

    def __init__(self, port: int, want: int, log: Path) -> None:
        self.want = want
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                ["mosquitto_sub", "-h", "127.0.0.1", "-p", str(port), "-q", "0", "-F", "%U %p",
                 "-t", topics.meter_filter(COMMUNITY, "ack")], stdout=out)
        self._probe(port)

    def _probe(self, port: int) -> None:
        """Publish probes until one arrives: mosquitto_sub does not say when it has subscribed."""
        probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        probe.connect("127.0.0.1", port)
        probe.loop_start()
        try:
            for _ in range(100):
                probe.publish(topics.meter_topic(COMMUNITY, "probe", "ack"), b"probe")
                time.sleep(0.1)
                if self.log.stat().st_size:
                    return
            raise RuntimeError("mosquitto_sub did not subscribe")
        finally:
            probe.loop_stop()
            probe.disconnect()

    def rate(self, timeout: float) -> float:
        """Acks per second, first to last, once all ``want`` have arrived."""
        deadline = time.monotonic() + timeout
        try:
            with self.log.open("rb") as f:
                seen, part = 0, b""
                while seen < self.want:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"only {seen} of {self.want} acks in {timeout} s")
                    time.sleep(self.POLL_S)
                    data = part + f.read()
                    whole = data.rfind(b"\n") + 1  # a line still being written is counted next time
                    seen += data[:whole].count(STORED)
                    part = data[whole:]
        finally:
            self.proc.kill()
            self.proc.wait()
        times = [float(line.partition(b" ")[0]) for line in self.log.read_bytes().splitlines() if STORED in line]
        return (self.want - 1) / (times[self.want - 1] - times[0])


def start_gateway(db: Path, port: int, ack_qos: int, cpus: set[int] | None) -> subprocess.Popen[bytes]:
    """`tmeter gateway run` in its own process (its pumps inherit ``cpus``); returns once healthy."""
    http = free_port()
    toml = db.with_suffix(".toml")
    toml.write_text(f'community = "{COMMUNITY}"\ndb = "{db}"\ninterval_s = {INTERVAL_S}\n'
                    f'[mqtt]\nport = {port}\nclient_id = "bench-{db.stem}"\n[status]\nhttp_port = {http}\n'
                    f'[ingest]\nack_qos = {ack_qos}\n')
    pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    proc = subprocess.Popen([sys.executable, "-m", "tmeter", "gateway", "run", "--config", str(toml),
                             "--log-level", "ERROR"], cwd=ROOT, preexec_fn=pin)  # noqa: PLW1509 - before exec only
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            snap = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{http}/status", timeout=1).read())
            if snap["health"] == "ok":
                return proc
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("gateway did not start")


def stop_gateway(gw: subprocess.Popen[bytes]) -> None:
    gw.send_signal(signal.SIGTERM)
    gw.wait(60)


def cpu_seconds(procs: list[psutil.Process]) -> dict[str, float]:
    """User + system CPU seconds so far of each process, by role."""
    out: dict[str, float] = {}
    for p in procs:
        cmd = " ".join(p.cmdline())
        role = "pumps" if "gateway.ingest.pump_process" in cmd else "mosquitto" if "mosquitto" in cmd else "gateway"
        t = p.cpu_times()
        out[role] = out.get(role, 0.0) + t.user + t.system
    return out


def gateway_rate(db: Path, broker: MosquittoBroker, msgs: list[tuple[str, bytes]], ack_qos: int,
                 cpus: set[int] | None = None) -> tuple[float, int, dict[str, float]]:
    """Acked readings per second from the backlog, how many readings the database holds, and
    the CPU microseconds per reading of the gateway, its pumps and Mosquitto."""
    stop_gateway(start_gateway(db, broker.port, ack_qos, cpus))  # creates the gateway's persistent session
    acks = AckObserver(broker.port, len(msgs), db.with_suffix(".acks"))
    publish(broker.port, msgs)
    gw = start_gateway(db, broker.port, ack_qos, cpus)
    assert broker.process is not None
    procs = [psutil.Process(gw.pid), *psutil.Process(gw.pid).children(recursive=True), psutil.Process(broker.process.pid)]
    before = cpu_seconds(procs)
    try:
        rate = acks.rate(300)
        cpu = {k: (v - before[k]) * 1e6 / len(msgs) for k, v in cpu_seconds(procs).items()}
    finally:
        stop_gateway(gw)
    return rate, sqlite3.connect(db).execute("SELECT COUNT(*) FROM readings").fetchone()[0], cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--meters", type=int, default=1000)
    ap.add_argument("--per-meter", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=5, help="broker/gateway pairs measured; the median ratio counts")
    ap.add_argument("--ack-qos", type=int, choices=(0, 1), default=IngestConfig().ack_qos,
                    help="the gateway's ingest.ack_qos (default: the gateway's default)")
    ap.add_argument("--json", action="store_true", help="print the numbers as JSON too")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tmeter-bench-ingest-"))
    (work / "mq").mkdir()
    registry = work / "registry.db"
    msgs = make_messages(registry, args.meters, args.per_meter)

    def fresh(name: str) -> Path:  # the same registry, no readings yet
        return Path(shutil.copy(registry, work / f"{name}.db"))

    runs = []
    with MosquittoBroker(workdir=work / "mq") as broker:
        for i in range(args.repeat):  # paired: machine load moves both rates alike
            b_rate = broker_rate(broker.port, msgs, i)
            c_rate = c_client_rate(broker.port, msgs, i, work / f"c{i}.log")
            g_rate, stored, cpu = gateway_rate(fresh(f"run{i}"), broker, msgs, args.ack_qos)
            runs.append({"broker_rate": b_rate, "c_client_rate": c_rate, "gateway_rate": g_rate,
                         "ratio": g_rate / b_rate, "c_ratio": g_rate / c_rate, "stored": stored,
                         "cpu_us_per_reading": cpu})
        g1_rate, stored1, _ = gateway_rate(fresh("one-core"), broker, msgs, args.ack_qos,
                                           cpus={min(os.sched_getaffinity(0))})
    median = sorted(runs, key=lambda r: r["ratio"])[len(runs) // 2]
    result = {"meters": args.meters, "messages": len(msgs), "ack_qos": args.ack_qos, **median,
              "ratios": [r["ratio"] for r in runs],
              "pairs": [(round(r["broker_rate"]), round(r["gateway_rate"])) for r in runs],
              "c_ratio_median": sorted(r["c_ratio"] for r in runs)[len(runs) // 2],
              "gateway_one_core_rate": g1_rate, "stored_one_core": stored1}
    report(result)
    if args.json:
        print(json.dumps(result))
    return 0 if all(r["stored"] == len(msgs) for r in runs) and stored1 == len(msgs) else 1


def report(r: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Ingest: {r['meters']} meters, {r['messages']} signed readings, real Mosquitto, "
                        f"acks QoS {r['ack_qos']}")
    table.add_column("path")
    table.add_column("readings/s", justify="right")
    table.add_column("goal", justify="right")
    table.add_row("Mosquitto backlog -> bare subscriber (paho, QoS 1)", f"{r['broker_rate']:,.0f}", "")
    table.add_row("backlog -> gateway: verified + stored (FULL) + acked", f"{r['gateway_rate']:,.0f}", "")
    ratios = ", ".join(f"{x:.2f}" for x in sorted(r["ratios"]))
    table.add_row(f"ratio gateway / broker (median of {ratios})", f"{r['ratio']:.2f}", ">= 0.50")
    table.add_row("for comparison: Mosquitto backlog -> mosquitto_sub (C, QoS 1)", f"{r['c_client_rate']:,.0f}", "")
    table.add_row("ratio gateway / C client (median)", f"{r['c_ratio_median']:.2f}", "")
    table.add_row("the same, gateway and its pumps pinned to one core", f"{r['gateway_one_core_rate']:,.0f}",
                  ">= 2,000")
    table.add_row("readings in the database (median run / one core)", f"{r['stored']:,} / {r['stored_one_core']:,}",
                  f"{r['messages']:,}")
    cpu = ", ".join(f"{k} {v:.0f}" for k, v in r["cpu_us_per_reading"].items())
    pairs = ", ".join(f"{b:,}/{g:,}" for b, g in r["pairs"])
    table.caption = (f"broker/gateway readings/s, pair by pair: {pairs}\n"
                     f"CPU µs per reading while the gateway took the backlog (median run): {cpu}")
    Console().print(table)


if __name__ == "__main__":
    sys.exit(main())
