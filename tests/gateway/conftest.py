"""Fixtures for the gateway suite: a provisioned registry, a gateway config on free ports, and a
simple deterministic clearing function standing in where the test is not about the market."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.interval.clearing import Bid, Clearing
from gateway.config import GatewayConfig, MarketConfig
from gateway.mosquitto_conf import LISTENER_LINES
from gateway.registry import Registry
from protocols import messages
from sim_hardware.harness.mosquitto import MosquittoBroker
from sim_hardware.harness.redteam import tmeter, wait_until  # noqa: F401 - the suite imports them from here
from tests.gateway.meters import AckCollector, MeterSpec, publisher, reading


def first_point_clearing(iv: int, bids: list[Bid], market: MarketConfig) -> Clearing:
    """Awards each bidder the quantity of its curve's first point at a mid-grid price: enough to
    exercise awards, publication and settlement without depending on gateway.market."""
    price = (market.import_price + market.export_price) // 2
    return Clearing(market.mechanism, price, {b.meter: b.curve[0][0] for b in bids})


def make_config(tmp_path: Path, broker: MosquittoBroker | None, **overrides: object) -> GatewayConfig:
    # Overrides at construction: the schema checks keys together (gate_closure_s < interval_s).
    cfg = GatewayConfig(**{"community": "c1", "db": str(tmp_path / "gateway.db"), "synchronous": "NORMAL",
                           **overrides})
    if broker is not None:
        cfg.mqtt.host, cfg.mqtt.port = broker.host, broker.port
    cfg.mqtt.client_id = f"gw-{tmp_path.name}"[:23]
    cfg.status.http_port = 0
    cfg.status.publish_s = 0.5
    return cfg


def provision(cfg: GatewayConfig, n: int, prefix: str = "m") -> list[MeterSpec]:
    reg = Registry(cfg.db)
    try:
        specs = []
        for i in range(n):
            dev = reg.provision(f"{prefix}{i:03d}", cfg.community, mqtt_port=cfg.mqtt.port)
            specs.append(MeterSpec(dev.meter, dev.kid, dev.key))
        return specs
    finally:
        reg.close()


@contextmanager
def backlog(cfg: GatewayConfig, broker: MosquittoBroker, meters: int,
            per_meter: int) -> Iterator[tuple[AckCollector, set[tuple[str, int, int]]]]:
    """Readings the broker queues for the gateway's persistent session while the gateway is
    down: the session is made (a gateway started and stopped), then ``per_meter`` readings of
    each of ``meters`` meters are published on the broker's own listener, each confirmed by the
    broker. Yields a collector of every meter's acks and the readings' keys."""
    from gateway.daemon import GatewayThread

    specs = provision(cfg, meters)
    GatewayThread(cfg, first_point_clearing).start().stop()
    acks = AckCollector(broker.host, broker.port, cfg.community, {s.meter: s.key for s in specs})
    pub = publisher(broker.host, broker.port)
    try:
        iv = messages.interval_index(time.time(), cfg.interval_s)
        wanted, sent = set(), []
        for _ in range(per_meter):
            for spec in specs:
                topic, payload, key = reading(spec, cfg.community, iv, cfg.interval_s)
                sent.append(pub.publish(topic, payload, qos=1))
                wanted.add(key)
        for info in sent:
            info.wait_for_publish(30)
        yield acks, wanted
    finally:
        pub.loop_stop()
        acks.close()


@pytest.fixture
def gw_config(tmp_path: Path, mosquitto: MosquittoBroker) -> GatewayConfig:
    return make_config(tmp_path, mosquitto)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self, t: float) -> None:
        self.t = t
        self.speed = 1.0
        self._start, self._wall0 = t, time.time()  # the clock read t when the test began

    def at_wall(self, wall: float) -> float:
        """Where wall time ``wall`` (e.g. a meter's provisioning) falls on this clock."""
        return self._start + (wall - self._wall0)

    def now(self) -> float:
        return self.t

    def real_seconds(self, simulated: float) -> float:
        return max(0.0, simulated)


class Offline:
    """Ingest, scheduler and ledger on one database, driven by hand: no broker, no threads."""

    def __init__(self, cfg: GatewayConfig, t: float, clear=first_point_clearing) -> None:  # noqa: ANN001
        from collections import Counter

        from gateway import db
        from gateway.ledger import note
        from gateway.ingest.store import Ingest
        from gateway.ledger.tlog import Ledger
        from gateway.interval.scheduler import Scheduler

        self.cfg = cfg
        self.clock = FakeClock(t)
        self.conn = db.connect(cfg.db, "NORMAL")
        self.ledger = Ledger(self.conn, cfg.origin, note.load_or_create_signing_key(cfg.key_path))
        self.counters: Counter[str] = Counter()
        self.ingest = Ingest(cfg, self.conn, self.ledger, self.clock, self.counters)  # type: ignore[arg-type]
        self.scheduler = Scheduler(cfg, self.conn, self.ledger, clear, self.counters)

    def send(self, *messages: tuple[str, bytes]) -> list:  # noqa: ANN201
        return self.ingest.process(list(messages))

    def tick(self, t: float | None = None) -> list:  # noqa: ANN201
        if t is not None:
            self.clock.t = t
        return self.scheduler.tick(self.clock.t)


INTERVAL_S = 60


@pytest.fixture
def offline(tmp_path: Path) -> Offline:
    cfg = make_config(tmp_path, None, interval_s=INTERVAL_S, gate_closure_s=10)
    cfg.settlement.grace_s = 5
    return Offline(cfg, 1_700_000_000.0 // INTERVAL_S * INTERVAL_S)


def populate(off: Offline, meters: int = 3, intervals: int = 3) -> list[MeterSpec]:
    """Bids, readings, clearings, settlements and checkpoints for a few intervals."""
    from tests.gateway.meters import bid, reading

    specs = provision(off.cfg, meters)
    iv0 = int(off.clock.t) // INTERVAL_S
    for k in range(intervals):
        iv = iv0 + k + 1
        off.tick(iv * INTERVAL_S - 30)
        off.send(*(bid(s, "c1", iv, k, [[40 - 30 * (i % 2), 100_000], [60, 200_000]], int(off.clock.t))
                   for i, s in enumerate(specs)))
        off.tick(iv * INTERVAL_S + 1)
        off.send(*(reading(s, "c1", iv, INTERVAL_S, imp_wh=10 * i, exp_wh=50)[:2] for i, s in enumerate(specs)))
    off.tick((iv0 + intervals + 2) * INTERVAL_S)
    return specs


def write_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it: (ca, cert, key) PEM."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    now = datetime.datetime.now(datetime.UTC)
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("tmeter test CA")).issuer_name(name("tmeter test CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    server = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
              .public_key(server_key.public_key()).serial_number(2).not_valid_before(now - datetime.timedelta(hours=1))
              .not_valid_after(now + datetime.timedelta(days=1))
              .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return paths


ROOT = Path(__file__).parents[2]


def write_toml(path: Path, db: str, user: str = "gateway", password: str = "gw-secret") -> Path:
    path.write_text(f'community = "c1"\ndb = "{db}"\n[mqtt]\nuser = "{user}"\npassword = "{password}"\n')
    return path


@dataclass
class Secured:
    cfg: GatewayConfig
    broker: MosquittoBroker
    meters: dict[str, tuple[MeterSpec, str]]


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[Secured]:
    """A broker running the files `tmeter gateway mosquitto-config` generated, with the lines it
    prints, a gateway with its own login, and two meters."""
    cfg = make_config(tmp_path, None)
    broker = MosquittoBroker(workdir=tmp_path / "mq", allow_anonymous=False)
    broker.workdir.mkdir()
    cfg.mqtt.host, cfg.mqtt.port = broker.host, broker.port
    cfg.mqtt.user, cfg.mqtt.password = "gateway", "gw-secret"
    reg = Registry(cfg.db)
    meters = {}
    for name in ("ma", "mb"):
        dev = reg.provision(name, "c1", mqtt_port=broker.port)
        meters[name] = (MeterSpec(name, dev.kid, dev.key), dev.mqtt.password)
    reg.close()
    out = tmeter("gateway", "mosquitto-config", "--config", str(write_toml(tmp_path / "gateway.toml", cfg.db)),
                 "--out", str(tmp_path / "broker"))
    assert out.returncode == 0, out.stderr
    assert LISTENER_LINES.strip() in out.stdout  # the operator is told to add it
    # The harness writes its listener line first: the listener's lines follow it, as required.
    broker.extra_config = (f"password_file {tmp_path / 'broker' / 'passwd'}\n"
                           f"acl_file {tmp_path / 'broker' / 'acl'}\n{LISTENER_LINES}")
    with broker:
        yield Secured(cfg, broker, meters)
