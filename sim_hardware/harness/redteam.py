"""The red-team replay of the gateway's trust anchor (issue #12): each attack of the issue tried
as an attacker would, against a gateway set up as the README says (a real Mosquitto running the
password and ACL files `tmeter gateway mosquitto-config` wrote, `tmeter gateway run` as a child
process, meters provisioned with `tmeter provision`), in one temporary folder.

Each attack returns a Row an operator can read: what was tried, what the gateway must do, what
it did, which counters moved (/status), readings acked but not stored (must be 0) and settlement
lines for forged or quarantined data (must be 0). bench/redteam.py prints the table,
tests/e2e/test_redteam.py asserts it. The gateway-process helpers (start, stop, health, status,
tmeter) are shared with tests/gateway/."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway import config as gateway_config
from gateway.mosquitto_conf import LISTENER_LINES
from protocols import messages, topics
from sim_hardware.harness.forged_meter import MeterLink, MeterSpec, bid, gateway_client_ids, intrude, reading
from sim_hardware.harness.mosquitto import MosquittoBroker
from sim_hardware.netutil import free_port

ROOT = Path(__file__).parents[2]
Key = tuple[str, int, int]  # (meter, boot, seq)


# --- the gateway as an operator runs it


def tmeter(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """The CLI as an operator runs it, in a child process."""
    return subprocess.run([sys.executable, "-m", "tmeter", *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)})


def start(toml: Path, log: Path, *extra: str, **env: str) -> subprocess.Popen[bytes]:
    """`tmeter gateway run` as a child process, its log appended to ``log``."""
    with log.open("ab") as err:  # the child has its own descriptor: ours is closed at once
        return subprocess.Popen([sys.executable, "-m", "tmeter", "gateway", "run", "--config", str(toml),
                                 "--log-level", "WARNING", *extra], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=err, env={**os.environ, **env})


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=30)


def health(port: int) -> tuple[int, dict[str, Any]]:
    """GET /health: (status code, body); (0, {}) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except (urllib.error.URLError, ConnectionError):
        return 0, {}


def status(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5) as r:
        return json.loads(r.read())


def wait_until(predicate: Callable[[], object], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


# --- one deployment in a folder


def forged(spec: MeterSpec, seq: int, iv: int, t0: int, t1: int, imp_wh: int, cnt_imp: int, flags: int = 0,
           community: str = "c1") -> tuple[str, bytes]:
    """A reading with every field chosen by the attacker, tagged with the meter's real key (the
    attacker holds a meter, not the gateway)."""
    msg = messages.reading(spec.meter, spec.kid, spec.boot, seq, iv, t0, t1, imp_wh, 0, cnt_imp,
                           spec.counter_exp, flags)
    return topics.meter_topic(community, spec.meter, "reading"), messages.encode(msg, spec.key)


@dataclass
class Row:
    attack: str
    expected: str
    outcome: str = ""
    counters: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    wrong_settlements: int = 0
    passed: bool = False


class Deployment:
    """Broker, gateway process and provisioned meters in ``root``, as the README sets them up."""

    METERS = ("honest", "mf", "mc", "mq", "ma", "mb")
    INTRUDER = "mx"  # provisioned, its login in an attacker's hands; no link of its own

    def __init__(self, root: Path, interval_s: int = 4, gate_closure_s: int = 1, grace_s: int = 1) -> None:
        self.root = root
        self.interval_s = interval_s
        self.toml = root / "gateway.toml"
        self.db = root / "gateway.db"
        self.log = root / "gateway.log"
        self.http_port = free_port()
        self.broker = MosquittoBroker(workdir=root / "mq", allow_anonymous=False)
        self.base_toml = (f'community = "c1"\ndb = "{self.db}"\ninterval_s = {interval_s}\n'
                          f'gate_closure_s = {gate_closure_s}\nsynchronous = "NORMAL"\n'
                          f'[mqtt]\nhost = "{self.broker.host}"\nport = {self.broker.port}\n'
                          f'user = "gateway"\npassword = "gw-secret"\n'
                          f'[settlement]\ngrace_s = {grace_s}\n'
                          f'[status]\nhttp_port = {self.http_port}\npublish_s = 0.5\n')
        self.proc: subprocess.Popen[bytes] | None = None
        self.links: dict[str, MeterLink] = {}
        self.passwords: dict[str, str] = {}
        # What the meters honestly metered, per (meter, iv): net export, as settlement counts it.
        self.honest: dict[tuple[str, int], int] = {}

    # set-up, as the README and deploy/README.md say

    def __enter__(self) -> Deployment:
        self.root.mkdir(parents=True, exist_ok=True)
        self.broker.workdir.mkdir(exist_ok=True)
        self.toml.write_text(self.base_toml)
        specs = [self.provision(m) for m in self.METERS]
        self.provision(self.INTRUDER)
        out = tmeter("gateway", "mosquitto-config", "--config", str(self.toml), "--out", str(self.root / "broker"))
        if out.returncode != 0:
            raise RuntimeError(f"mosquitto-config: {out.stderr}")
        self.broker.extra_config = (f"password_file {self.root / 'broker' / 'passwd'}\n"
                                    f"acl_file {self.root / 'broker' / 'acl'}\n{LISTENER_LINES}")
        self.broker.start()
        self.start_gateway()
        for spec in specs:
            self.links[spec.meter] = MeterLink(self.broker, spec, self.passwords[spec.meter])
            self.links[spec.meter].subscribe_acks()
        return self

    def __exit__(self, *exc: object) -> None:
        for link in self.links.values():
            link.close()
        self.stop_gateway()
        self.broker.stop()

    def provision(self, meter: str) -> MeterSpec:
        out_file = self.root / f"{meter}.json"
        out = tmeter("provision", meter, "--config", str(self.toml), "--out", str(out_file))
        if out.returncode != 0:
            raise RuntimeError(f"provision {meter}: {out.stderr}")
        dev = json.loads(out_file.read_text())
        self.passwords[meter] = dev["mqtt"]["password"]
        return MeterSpec(meter, dev["kid"], bytes.fromhex(dev["key"]))

    @property
    def cfg(self) -> gateway_config.GatewayConfig:
        return gateway_config.load(self.toml)

    def start_gateway(self, *extra: str, healthy: bool = True) -> None:
        self.proc = start(self.toml, self.log, *extra)
        if healthy and not wait_until(lambda: self.health()[0] == 200, 30):
            raise RuntimeError(f"gateway not healthy: {self.health()} {self.log.read_text()[-2000:]}")

    def stop_gateway(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        try:
            return stop(self.proc)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc = None

    def health(self) -> tuple[int, dict[str, Any]]:
        return health(self.http_port)

    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def counters(self) -> dict[str, int]:
        try:
            return dict(status(self.http_port)["counters"])
        except (urllib.error.URLError, ConnectionError):
            return {}

    # the meters' side

    def spec(self, meter: str) -> MeterSpec:
        return self.links[meter].spec

    def send(self, meter: str, message: tuple[str, bytes]) -> None:
        self.links[meter].publish(*message)

    def honest_reading(self, meter: str, iv: int, imp_wh: int = 100, exp_wh: int = 20,
                       t1: int | None = None) -> tuple[tuple[str, bytes], Key]:
        """The meter's next true reading of ``iv`` (t1: when it closed it, default the interval's
        end), counted in what it honestly metered."""
        spec = self.spec(meter)
        topic, payload, key = reading(spec, "c1", iv, self.interval_s, imp_wh, exp_wh)
        if t1 is not None:
            msg = messages.reading(spec.meter, spec.kid, spec.boot, spec.seq, iv, iv * self.interval_s, t1,
                                   imp_wh, exp_wh, spec.counter_imp, spec.counter_exp, 0)
            payload = messages.encode(msg, spec.key)
        self.honest[(meter, iv)] = self.honest.get((meter, iv), 0) + exp_wh - imp_wh
        return (topic, payload), key

    def send_honest(self, meter: str, iv: int, imp_wh: int = 100, exp_wh: int = 20, t1: int | None = None) -> Key:
        message, key = self.honest_reading(meter, iv, imp_wh, exp_wh, t1)
        self.send(meter, message)
        return key

    def ack(self, key: Key, timeout: float = 15) -> str | None:
        link = self.links[key[0]]
        wait_until(lambda: key in link.acks, timeout)
        return link.acks.get(key)

    def real_iv(self) -> int:
        return messages.interval_index(time.time(), self.interval_s)

    def interval_just_ended(self) -> int:
        """Waits for the next interval boundary; returns the interval that just ended (its
        readings are on time: sent before the grace period is over)."""
        iv = self.real_iv()
        while time.time() < (iv + 1) * self.interval_s + 0.1:
            time.sleep(0.02)
        return iv

    # the database, read-only as an auditor reads it

    @contextmanager
    def read(self, db: Path | None = None) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(f"file:{db or self.db}?mode=ro", uri=True, timeout=10)
        try:
            yield conn
        finally:
            conn.close()

    def settled(self, iv: int) -> bool:
        with self.read() as conn:
            found = conn.execute("SELECT 1 FROM intervals WHERE iv=? AND state='settled'", (iv,)).fetchone()
        return found is not None

    def lost(self, db: Path | None = None) -> int:
        """Readings acked 'stored' (or 'duplicate': a resend of one stored) that are in neither
        readings nor quarantine."""
        acked = {k for link in self.links.values() for k, res in list(link.acks.items())
                 if res in ("stored", "duplicate")}
        with self.read(db) as conn:
            kept = set(conn.execute("SELECT meter, boot, seq FROM readings"))
            kept |= set(conn.execute("SELECT meter, boot, seq FROM quarantine"))
        return len(acked - kept)

    def wrong_settlements(self, pairs: Iterable[tuple[str, int]], db: Path | None = None) -> int:
        """Settlement lines of (meter, iv) whose latest metered energy is not what the meter
        honestly metered (no line at all, or no energy, is right where it metered nothing)."""
        wrong = 0
        with self.read(db) as conn:
            for meter, iv in pairs:
                last = conn.execute("SELECT metered_wh FROM settlements WHERE meter=? AND iv=? ORDER BY rev DESC"
                                    " LIMIT 1", (meter, iv)).fetchone()
                if last is not None and last[0] != self.honest.get((meter, iv)):
                    wrong += 1
        return wrong


def moved(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The counters that changed, by how much (the daemon's heartbeat left out: batches, the
    scheduler's clearings and settlements, meters' statuses)."""
    skip = {"ingest_batches", "cleared", "settled", "status"}
    return {k: after.get(k, 0) - before.get(k, 0) for k in sorted(after.keys() | before.keys())
            if k not in skip and after.get(k, 0) != before.get(k, 0)}


@contextmanager
def row(d: Deployment, attack: str, expected: str) -> Iterator[Row]:
    """A row whose counters are what moved while the attack ran and whose lost readings are
    counted afterwards; an exception in the attack is its outcome, not held."""
    r = Row(attack, expected)
    before, pid = d.counters(), d.pid()
    try:
        yield r
    except Exception as exc:  # noqa: BLE001 - the table reports it; the replay goes on
        r.outcome, r.passed = f"error: {type(exc).__name__}: {exc}"[:200], False
    if d.proc is not None and d.db.exists():
        # Counters start at 0 with each gateway process: across a restart, the new one's.
        r.counters = r.counters or moved(before if d.pid() == pid else {}, d.counters())
        r.lost = d.lost()


# --- the attacks, in the order of the replay


def span_forgery(d: Deployment) -> Row:
    """A gap record ('partial') claiming to span from 1970 to justify 10^9 Wh."""
    with row(d, "span forgery", "t0 = 0, 10^9 Wh refused (span_out_of_range), nothing settled") as r:
        iv = d.interval_just_ended()
        first = d.send_honest("mf", iv, imp_wh=10, exp_wh=0)
        d.ack(first)
        spec = d.spec("mf")
        spec.seq += 1
        t1 = (iv + 1) * d.interval_s
        d.send("mf", forged(spec, spec.seq, iv, 0, t1, 10 ** 9, spec.counter_imp + 10 ** 9, messages.FLAG_PARTIAL))
        res = d.ack(("mf", spec.boot, spec.seq))
        wait_until(lambda: d.settled(iv), 20)
        r.wrong_settlements = d.wrong_settlements([("mf", iv)])
        r.outcome = f"ack {res}; interval settled: {d.settled(iv)}"
        r.passed = res == "span_out_of_range" and d.settled(iv) and r.wrong_settlements == 0
    return r


def counter_jump(d: Deployment) -> Row:
    with row(d, "counter jump", "counters +10^15 for 100 Wh refused, the honest readings after it stored") as r:
        iv = d.interval_just_ended()
        d.ack(d.send_honest("mc", iv, imp_wh=100, exp_wh=0))
        spec = d.spec("mc")
        spec.seq += 1  # the refused record takes a number; the meter's counters never moved
        d.send("mc", forged(spec, spec.seq, iv, iv * d.interval_s, (iv + 1) * d.interval_s, 100, 10 ** 15))
        jump = d.ack(("mc", spec.boot, spec.seq))
        after = [d.ack(d.send_honest("mc", iv, imp_wh=50, exp_wh=0)) for _ in range(2)]
        wait_until(lambda: d.settled(iv), 20)
        r.wrong_settlements = d.wrong_settlements([("mc", iv)])
        r.outcome = f"jump: {jump}; after it: {', '.join(map(str, after))}"
        r.passed = jump == "counter_mismatch" and after == ["stored", "stored"] and r.wrong_settlements == 0
    return r


def quarantine(d: Deployment) -> Row:
    """Interval 0 with the time-unsynced flag, and a reading of an interval no market ran for
    (the gateway was down then)."""
    with row(d, "1970 / never-opened interval",
             "1970 reading quarantined (listed), the other stored; neither opens an interval nor settles") as r:
        spec = d.spec("mq")
        spec.seq += 1
        spec.counter_imp += 1
        d.send("mq", forged(spec, spec.seq, 0, 0, d.interval_s, 1, spec.counter_imp, messages.FLAG_TIME_UNSYNCED))
        epoch = d.ack(("mq", spec.boot, spec.seq))
        down_iv = d.real_iv() + 2  # opened by nobody: the gateway is down from now until after it
        d.stop_gateway()
        while d.real_iv() < down_iv + 2:
            time.sleep(0.05)
        d.start_gateway()
        gap = d.ack(d.send_honest("mq", down_iv, imp_wh=7, exp_wh=0))
        d.honest.pop(("mq", down_iv))  # no market ran: it must not be settled at all
        later = d.real_iv() + 1
        wait_until(lambda: d.settled(later), 20)  # the scheduler had time to settle whatever it would
        listed = json.loads(tmeter("gateway", "quarantine", "--config", str(d.toml), "--json").stdout or "[]")
        listed_0 = [q for q in listed if q["meter"] == "mq" and q["iv"] == 0]
        with d.read() as conn:
            opened = conn.execute("SELECT COUNT(*) FROM intervals WHERE iv IN (0, ?)", (down_iv,)).fetchone()[0]
            lines = conn.execute("SELECT COUNT(*) FROM settlements WHERE iv IN (0, ?)", (down_iv,)).fetchone()[0]
        r.wrong_settlements = lines
        reason = listed_0[0]["reason"] if listed_0 else "not listed"
        r.outcome = f"1970: ack {epoch}, {reason}; never-opened: ack {gap}; intervals rows {opened}"
        r.passed = epoch == "stored" and len(listed_0) == 1 and gap == "stored" and opened == 0 and lines == 0
    return r


def client_id_takeover(d: Deployment) -> Row:
    with row(d, "client-id takeover", "a meter login under the gateway's and mb's client ids takes no session;"
             " /health 200") as r:
        cfg = d.cfg
        ids = [*gateway_client_ids(cfg), "mb"]
        # Mosquitto logs "Client <id> already connected, closing old connection" on a takeover.
        takeovers = d.broker.log_text().count("already connected")
        codes = [intrude(d.broker, d.INTRUDER, d.passwords[d.INTRUDER], cid) for cid in ids]
        iv = d.real_iv()
        key = d.send_honest("mb", iv)
        res = d.ack(key)
        code = d.health()[0]
        took = d.broker.log_text().count("already connected") > takeovers
        r.outcome = (f"{len(ids)} ids, CONNACK {sorted(set(codes))} (the broker names the session after the login);"
                     f" mb drops {d.links['mb'].drops}, its ack {res}; /health {code}")
        r.passed = not took and d.links["mb"].drops == 0 and res == "stored" and code == 200
    if r.passed and any(r.counters.get(k) for k in ("up_restarts", "down_restarts", "mqtt_disconnects")):
        r.passed = False
        r.outcome += "; the gateway's connections were disturbed"
    return r


def malformed(d: Deployment) -> Row:
    with row(d, "malformed payloads", "each counted by reason, none acked, daemon up, /health 200") as r:
        spec = d.spec("ma")
        base = topics.meter_topic("c1", "ma", "reading")
        topic, good, _ = reading(MeterSpec("ma", spec.kid, spec.key, seq=10_000), "c1", d.real_iv(), d.interval_s)
        bad_tag = good[:-3] + (b"0" if good[-3:-2] != b"0" else b"1") + good[-2:]
        a_bid = bid(spec, "c1", d.real_iv() + 1, 99, [[0, 100_000]], int(time.time()))[1]
        attempts = {
            "garbage": (base, os.urandom(64)),
            "oversized": (base, b"{" + b"x" * 5000 + b"}"),
            "bad tag": (base, bad_tag),
            "bid on the reading topic": (base, a_bid),
            "reading on the status topic": (topics.meter_topic("c1", "ma", "status"), good),
        }
        before = d.counters()
        for message in attempts.values():
            d.send("ma", message)
        wait_until(lambda: sum(moved(before, d.counters()).values()) >= len(attempts), 10)
        refused = sum(v for k, v in moved(before, d.counters()).items() if k not in ("stored", "bid", "status"))
        alive = d.proc is not None and d.proc.poll() is None
        code = d.health()[0]
        acked = [k for k in d.links["ma"].acks if k[2] >= 10_000]
        r.outcome = (f"{refused} of {len(attempts)} counted as refused; acked {len(acked)}; alive {alive};"
                     f" /health {code}")
        r.passed = refused == len(attempts) and not acked and alive and code == 200
    return r


def database_locked(d: Deployment) -> Row:
    with row(d, "database locked", "/health 503 (storage) while another process holds the lock, nothing acked;"
             " 200 and every reading acked after release") as r:
        other = sqlite3.connect(str(d.db), isolation_level=None, timeout=1)
        try:
            other.execute("BEGIN EXCLUSIVE")
            iv = d.real_iv()
            sent = []
            for _ in range(3):
                message, key = d.honest_reading("honest", iv)
                sent.append((key, message))
                d.send("honest", message)
            went_503 = wait_until(lambda: d.health()[0] == 503, 20)
            why = d.health()[1].get("health")
            during = [k for k, _ in sent if k in d.links["honest"].acks]
            other.execute("ROLLBACK")
        finally:
            other.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(k in d.links["honest"].acks for k, _ in sent):
            for k, message in sent:  # the firmware resends what was not acked
                if k not in d.links["honest"].acks:
                    d.send("honest", message)
            time.sleep(0.5)
        back = wait_until(lambda: d.health()[0] == 200, 30)
        # A resend of a reading stored meanwhile is acked "duplicate": stored once, either way.
        acked = [d.links["honest"].acks.get(k) for k, _ in sent]
        r.outcome = f"503 {went_503} ({why}), acked while locked {len(during)}; after: {acked}, /health 200 {back}"
        r.passed = (went_503 and why == "storage" and not during and back
                    and all(a in ("stored", "duplicate") for a in acked))
    return r


def clock_ahead(d: Deployment, hours: int = 3) -> Row:
    """The gateway restarts with its wall clock hours ahead (set through [clock] start, as
    tests/gateway/test_clock_jump.py does for the child process)."""
    with row(d, f"restart {hours} h ahead", "/health 503 (clock), the scheduler holds: nothing cleared or settled"
             " ahead; 200 once meters confirm the real clock") as r:
        d.stop_gateway()
        with d.read() as conn:
            done = set(conn.execute("SELECT iv, state FROM intervals WHERE state != 'open'"))
        d.toml.write_text(d.base_toml + f"[clock]\nstart = {time.time() + hours * 3600}\n")
        d.start_gateway(healthy=False)
        doubt = wait_until(lambda: d.health()[0] == 503, 30)
        why = d.health()[1].get("health")
        time.sleep(2 * d.interval_s)  # long enough to settle something, were it not held
        counters = d.counters()
        with d.read() as conn:
            now_done = set(conn.execute("SELECT iv, state FROM intervals WHERE state != 'open'"))
            top = conn.execute("SELECT MAX(iv) FROM intervals").fetchone()[0]
        ahead = {iv for iv, _ in now_done - done if iv > d.real_iv()}
        r.counters = moved({}, {k: v for k, v in counters.items() if k.startswith("clock")})
        d.stop_gateway()
        d.toml.write_text(d.base_toml)  # the operator fixes the clock: right, but unconfirmed
        d.start_gateway(healthy=False)
        confirmed = False
        deadline = time.monotonic() + 30
        while not confirmed and time.monotonic() < deadline:
            d.send_honest("honest", d.real_iv() - 1, t1=int(time.time()))  # NTP-synced meters' t1
            confirmed = wait_until(lambda: d.health()[0] == 200, 3)
        r.outcome = (f"503 {doubt} ({why}); settled ahead {len(ahead)}, max iv {top - d.real_iv():+d} from real;"
                     f" confirmed by meters {confirmed}")
        r.passed = doubt and why == "clock" and not ahead and top <= d.real_iv() + 3 and confirmed \
            and r.counters.get("clock_hold", 0) >= 1
    return r


def ledger_rollback(d: Deployment) -> Row:
    with row(d, "ledger rollback", "an old copy put back fails `ledger verify --checkpoint <later note>`;"
             " the real database passes") as r:
        note_file = str(d.root / "cp" / "checkpoint.note")
        first = d.counters()
        old = d.root / "rollback-old.db"
        src, dst = sqlite3.connect(str(d.db), timeout=10), sqlite3.connect(str(old))
        try:
            src.backup(dst)  # a consistent copy of the live database, as a backup tool takes it
        finally:
            src.close()
            dst.close()
        with d.read(old) as conn:
            size = conn.execute("SELECT MAX(size) FROM checkpoints").fetchone()[0]
        for _ in range(3):  # the log grows: readings, and the checkpoints the scheduler signs
            d.ack(d.send_honest("honest", d.real_iv()))
        wait_until(lambda: _latest_checkpoint(d.db) > size, 30)
        before_stop = d.counters()
        d.stop_gateway()
        later = _latest_checkpoint(d.db)  # what a subscriber of the retained checkpoint topic kept
        exported = tmeter("ledger", "export-checkpoint", "--config", str(d.toml), "--out", str(d.root / "cp"))
        grown = d.root / "rollback-grown.db"
        _move_db(d.db, grown)
        shutil.copy(old, d.db)
        out = tmeter("ledger", "verify", "--config", str(d.toml), "--checkpoint", note_file)
        os.remove(d.db)
        _move_db(grown, d.db)
        # The real database passes against the same note: the failure above is the rollback's.
        real = tmeter("ledger", "verify", "--config", str(d.toml), "--checkpoint", note_file)
        d.start_gateway()
        r.counters = moved(first, before_stop)  # the restarted gateway's start at 0
        fails = [ln for ln in out.stdout.splitlines() if ln.startswith("FAIL")]
        r.outcome = (f"copy at checkpoint {size}, later note {later}: verify exit {out.returncode};"
                     f" {fails[0] if fails else out.stdout[-120:]}; the real database: exit {real.returncode}")
        r.passed = (exported.returncode == 0 and later > size and out.returncode == 1 and "rolled back" in out.stdout
                    and real.returncode == 0)
    return r


def _latest_checkpoint(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute("SELECT COALESCE(MAX(size), 0) FROM checkpoints").fetchone()[0]
    finally:
        conn.close()


def _move_db(src: Path, dst: Path) -> None:
    """A stopped gateway's database and its WAL files, moved together."""
    for suffix in ("", "-wal", "-shm"):
        if Path(f"{src}{suffix}").exists():
            os.replace(f"{src}{suffix}", f"{dst}{suffix}")


def operator_mistakes(d: Deployment) -> Row:
    with row(d, "reprovision / bad config", "provision without --rotate: exit 2, one line, no file;"
             " a bad config: exit 2, one line, no database") as r:
        again = tmeter("provision", "ma", "--config", str(d.toml), "--out", str(d.root / "ma-again.json"))
        bad_db = d.root / "bad" / "gateway.db"
        bad = d.root / "bad.toml"
        bad.write_text(f'community = "c 1!"\ndb = "{bad_db}"\n')
        run = tmeter("gateway", "run", "--config", str(bad))
        one_line = [len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr for p in (again, run)]
        r.outcome = (f"provision exit {again.returncode}, file {(d.root / 'ma-again.json').exists()};"
                     f" bad config exit {run.returncode}, db {bad_db.exists()}; one-line errors {all(one_line)}")
        r.passed = (again.returncode == 2 and not (d.root / "ma-again.json").exists() and run.returncode == 2
                    and not bad_db.exists() and all(one_line))
    return r


def database_removed(d: Deployment) -> Row:
    """Last: the database goes while the gateway runs."""
    with row(d, "gateway.db removed", "no acks after, /health 503 (storage), a rescued copy;"
             " restart refused (exit 2) until --init") as r:
        first = d.counters()
        os.remove(d.db)
        message, key = d.honest_reading("honest", d.real_iv())
        went_503 = False
        for _ in range(8):  # the meter resends what was not acked
            d.send("honest", message)
            went_503 = went_503 or d.health()[0] == 503
            time.sleep(0.5)
        why = d.health()[1].get("health")
        acked = d.links["honest"].acks.get(key)
        r.counters = moved(first, d.counters())  # before the stop: the row cannot read them after
        code = d.stop_gateway()
        rescued = sorted(d.root.glob("gateway.db.rescued-*"))
        again = tmeter("gateway", "run", "--config", str(d.toml))
        r.lost = d.lost(rescued[0]) if rescued else -1
        r.outcome = (f"503 {went_503} ({why}), ack {acked}; stop exit {code}; rescued {len(rescued)};"
                     f" restart exit {again.returncode}, --init named {'--init' in again.stderr}")
        r.passed = (went_503 and why == "storage" and acked is None and len(rescued) == 1 and again.returncode == 2
                    and "--init" in again.stderr and not d.db.exists())
    return r


ATTACKS: dict[str, Callable[[Deployment], Row]] = {
    "span": span_forgery, "counter": counter_jump, "quarantine": quarantine, "takeover": client_id_takeover,
    "malformed": malformed, "locked": database_locked, "clock": clock_ahead, "rollback": ledger_rollback,
    "mistakes": operator_mistakes, "removed": database_removed,
}


def replay(root: Path, only: Iterable[str] | None = None) -> list[Row]:
    """Every attack (or those named), in order, against one deployment in ``root``; the
    database removal, when chosen, is always last."""
    chosen = [name for name in ATTACKS if only is None or name in set(only)]
    rows = []
    with Deployment(root) as d:
        for name in chosen:
            rows.append(ATTACKS[name](d))
            if name != "removed" and (d.proc is None or d.proc.poll() is not None):
                try:  # an attack that failed half-way left the gateway down: the next one needs it
                    d.start_gateway()
                except RuntimeError:
                    pass
    return rows
