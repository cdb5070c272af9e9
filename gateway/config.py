"""The gateway's TOML configuration (see deploy/gateway.toml for every key, with comments).

Everything has a default so a test or the demo can build a config in code:
``GatewayConfig(community="c1", db=path)``; ``load(path)`` reads a file and rejects unknown keys,
so a typo in the field is an error at start-up, not a silently ignored setting.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any


@dataclass
class MqttConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    user: str | None = None
    password: str | None = None
    tls: bool = False
    ca: str | None = None
    client_id: str = "tmeter-gateway"
    keepalive_s: int = 30


@dataclass
class MarketConfig:
    mechanism: str = "uniform"  # "uniform" | "p2p" (gateway.market)
    import_price: int = 300_000  # grid retail price, micro-currency per kWh
    export_price: int = 50_000  # grid feed-in price, micro-currency per kWh
    allocation: str = "proportional"  # cost sharing of the uniform mechanism
    capacity_wh: int | None = None  # transformer limit per interval, None = unlimited


@dataclass
class SettlementConfig:
    grace_s: int = 120  # settle this long after an interval ends, so readings can arrive
    feeder_meter: str | None = None  # meter id at the community's connection point
    loss_tolerance: float = 0.05  # allowed |feeder - members| as a fraction of all metered energy
    loss_tolerance_wh: int = 10  # ... and at least this many Wh (meter resolution)
    # The wall clock moved this much more (or less) than the monotonic clock: a clock jump, and
    # the scheduler settles nothing until the clock is believed again (gateway/daemon.py).
    clock_jump_s: int = 300


@dataclass
class IngestConfig:
    per_meter_queue: int = 64  # bounded per meter: a flood from one meter is dropped, not queued
    total_queue: int = 50_000
    batch: int = 512  # records per transaction (group commit)
    max_power_w: int = 200_000  # a reading above this average power is out of range
    time_slack_s: int = 300  # t0/t1 may stray this far outside their interval
    future_intervals: int = 1  # readings/bids this many intervals ahead of our clock pass
    max_outage_s: int = 7 * 86400  # the longest span one gap record (partial, offline) may cover
    settlement_window_s: int = 7 * 86400  # older records are quarantined, not settled
    # An ack is itself the acknowledgement the meter's store-and-forward waits for: should one
    # be lost, the meter sends its record again and is acked "duplicate". QoS 1 would add a
    # second retransmission layer and a PUBACK per reading, costing a third of ingest
    # throughput (bench/ingest.py). Sparkplug B sends its data at QoS 0 on the same reasoning.
    ack_qos: int = 0
    ack_window: int = 20  # with ack_qos 1: acks awaiting PUBACK at once; more wait in the pump


@dataclass
class LedgerConfig:
    origin: str = ""  # default: "tmeter.local/<community>"
    key_file: str = ""  # Ed25519 PEM; default: <db>.ledger-key.pem, created on first run


@dataclass
class StatusConfig:
    http_host: str = "127.0.0.1"
    http_port: int | None = 8080  # None: no HTTP endpoint
    publish_s: float = 10.0


@dataclass
class InfluxConfig:
    enabled: bool = False
    url: str = "http://127.0.0.1:8086"
    token: str = ""
    org: str = "tmeter"
    bucket: str = "tmeter"
    batch: int = 500
    flush_s: float = 2.0
    retry_max_s: float = 30.0


@dataclass
class ClockConfig:
    """Simulated time: t = start + (now - epoch) * speed. All None/1: the wall clock."""
    start: float | None = None
    epoch: float | None = None
    speed: float = 1.0


@dataclass
class GatewayConfig:
    community: str = "c1"
    db: str = "gateway.db"
    interval_s: int = 900
    gate_closure_s: int = 60
    synchronous: str = "FULL"  # SQLite fsync policy: FULL survives power loss, NORMAL a crash
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    market: MarketConfig = field(default_factory=MarketConfig)
    settlement: SettlementConfig = field(default_factory=SettlementConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    influx: InfluxConfig = field(default_factory=InfluxConfig)
    clock: ClockConfig = field(default_factory=ClockConfig)

    @property
    def origin(self) -> str:
        return self.ledger.origin or f"tmeter.local/{self.community}"

    @property
    def key_path(self) -> Path:
        return Path(self.ledger.key_file or f"{self.db}.ledger-key.pem")


class ConfigError(ValueError):
    pass


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        if name not in known:
            raise ConfigError(f"unknown key {where}{name}")
        default = known[name].default_factory() if callable(known[name].default_factory) else None
        if is_dataclass(default):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}{name} must be a table")
            kwargs[name] = _build(type(default), value, f"{where}{name}.")
        else:
            kwargs[name] = value
    return cls(**kwargs)


def from_dict(data: dict[str, Any]) -> GatewayConfig:
    cfg = _build(GatewayConfig, data, "")
    if cfg.market.mechanism not in ("uniform", "p2p"):
        raise ConfigError("market.mechanism must be 'uniform' or 'p2p'")
    if cfg.interval_s <= 0 or not 0 <= cfg.gate_closure_s < cfg.interval_s:
        raise ConfigError("need interval_s > 0 and 0 <= gate_closure_s < interval_s")
    return cfg


def load(path: str | Path) -> GatewayConfig:
    path = Path(path)
    with path.open("rb") as f:
        data = tomllib.load(f)
    cfg = from_dict(data)
    # Relative paths in a config file are relative to the file, as a reader would expect.
    if not Path(cfg.db).is_absolute():
        cfg.db = str(path.parent / cfg.db)
    if cfg.ledger.key_file and not Path(cfg.ledger.key_file).is_absolute():
        cfg.ledger.key_file = str(path.parent / cfg.ledger.key_file)
    return cfg
