"""Device registry: each meter's HMAC keys (with key ids, for rotation) and MQTT credentials,
kept in the gateway's SQLite database, and the device config file `provision` hands to a meter.

Typed API for the demo and bench, which provision hundreds of meters in-process::

    reg = Registry("gateway.db")
    cfg = reg.provision("m01", community="c1", mqtt_port=1883)   # -> DeviceConfig
    cfg.write("m01.json")
    reg.key("m01", cfg.kid)                                       # -> 32 bytes, or None

Only a PBKDF2 hash of the MQTT password is stored (the format Mosquitto's password file uses),
so the plain password exists once, in the device config.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gateway import db
from protocols import topics

KEY_LEN = 32
PBKDF2_ITERATIONS = 1000
MAX_KID = 0xFFFF


def mosquitto_hash(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """Mosquitto 2 password-file hash ``$7$<iterations>$<b64 salt>$<b64 PBKDF2-SHA512>``."""
    salt = salt or os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


@dataclass
class MqttSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    user: str = ""
    password: str = ""
    tls: bool = False
    ca: str | None = None
    keepalive_s: int = 30


@dataclass
class ModbusSettings:
    link: str = "uart"
    baud: int = 9600
    meter_unit: int = 1
    meter_model: str = "sdm630"
    battery_unit: int = 2
    uart_id: int = 2
    tx_pin: int = 17
    rx_pin: int = 16
    de_pin: int = 4


@dataclass
class Prefs:
    pv_price: int = 10_000
    import_wtp: int = 300_000
    battery_price_empty: int = 250_000
    battery_price_full: int = 50_000


@dataclass
class ClockSettings:
    start: float | None = None
    epoch: float | None = None
    speed: float = 1


@dataclass
class DeviceConfig:
    """What a meter's firmware reads at boot (the JSON layout is shared with firmware/)."""
    meter: str
    community: str
    kid: int
    key: bytes
    interval_s: int = 900
    gate_closure_s: int = 60
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    wifi: dict[str, str] = field(default_factory=lambda: {"ssid": "", "password": ""})
    ntp_host: str = "pool.ntp.org"
    modbus: ModbusSettings = field(default_factory=ModbusSettings)
    prefs: Prefs = field(default_factory=Prefs)
    clock: ClockSettings = field(default_factory=ClockSettings)

    def __post_init__(self) -> None:
        # Callers may pass plain dicts for the nested sections (as read from JSON).
        for name, cls in (("mqtt", MqttSettings), ("modbus", ModbusSettings), ("prefs", Prefs),
                          ("clock", ClockSettings)):
            value = getattr(self, name)
            if isinstance(value, dict):
                setattr(self, name, cls(**value))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["key"] = self.key.hex()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1) + "\n"

    def write(self, path: str | Path) -> Path:
        """Write the config readable by its owner only: it holds the key and the password."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.to_json())
        return path


class RegistryError(ValueError):
    pass


class Registry:
    """Meters, keys and MQTT credential hashes in the gateway database."""

    def __init__(self, db_path: str | Path | None = None, conn: sqlite3.Connection | None = None) -> None:
        if conn is None:
            if db_path is None:
                raise RegistryError("need a database path or connection")
            conn = db.connect(db_path)
        self.conn = conn

    def close(self) -> None:
        self.conn.close()

    def provision(
        self,
        meter: str,
        community: str = "c1",
        *,
        mqtt_host: str = "127.0.0.1",
        mqtt_port: int = 1883,
        tls: bool = False,
        ca: str | None = None,
        keepalive_s: int = 30,
        interval_s: int = 900,
        gate_closure_s: int = 60,
        feeder: bool = False,
        retire_old: bool = False,
        key: bytes | None = None,
        password: str | None = None,
        **device: Any,
    ) -> DeviceConfig:
        """Create the meter (or rotate it: a new key id, older keys valid until retired) and
        return its device config. ``device`` overrides DeviceConfig fields (wifi, ntp_host,
        modbus, prefs, clock)."""
        if not topics.valid_id(meter) or not topics.valid_id(community):
            raise RegistryError("meter and community ids are 1-32 of [A-Za-z0-9_-]")
        key = key if key is not None else secrets.token_bytes(KEY_LEN)
        if len(key) != KEY_LEN:
            raise RegistryError("a meter key is 32 bytes")
        password = password or secrets.token_urlsafe(18)
        now = int(time.time())
        with db.transaction(self.conn) as c:
            row = c.execute("SELECT community FROM meters WHERE meter=?", (meter,)).fetchone()
            if row is not None and row[0] != community:
                raise RegistryError(f"{meter} belongs to community {row[0]}")
            c.execute(
                "INSERT INTO meters(meter, community, created, mqtt_hash, feeder) VALUES (?,?,?,?,?)"
                " ON CONFLICT(meter) DO UPDATE SET mqtt_hash=excluded.mqtt_hash, feeder=excluded.feeder",
                (meter, community, now, mosquitto_hash(password), int(feeder)))
            kid = c.execute("SELECT COALESCE(MAX(kid), 0) + 1 FROM meter_keys WHERE meter=?", (meter,)).fetchone()[0]
            if kid > MAX_KID:
                raise RegistryError("key ids exhausted")
            if retire_old:
                c.execute("UPDATE meter_keys SET retired=? WHERE meter=? AND retired IS NULL", (now, meter))
            c.execute("INSERT INTO meter_keys(meter, kid, key, created) VALUES (?,?,?,?)", (meter, kid, key, now))
        mqtt = MqttSettings(mqtt_host, mqtt_port, meter, password, tls, ca, keepalive_s)
        return DeviceConfig(meter, community, kid, key, interval_s, gate_closure_s, mqtt, **device)

    def key(self, meter: str, kid: int) -> bytes | None:
        """The meter's key ``kid`` unless unknown or retired."""
        row = self.conn.execute(
            "SELECT key FROM meter_keys WHERE meter=? AND kid=? AND retired IS NULL", (meter, kid)).fetchone()
        return bytes(row[0]) if row else None

    def current_key(self, meter: str) -> tuple[int, bytes] | None:
        row = self.conn.execute(
            "SELECT kid, key FROM meter_keys WHERE meter=? AND retired IS NULL ORDER BY kid DESC LIMIT 1",
            (meter,)).fetchone()
        return (row[0], bytes(row[1])) if row else None

    def retire(self, meter: str, kid: int) -> bool:
        with db.transaction(self.conn) as c:
            cur = c.execute("UPDATE meter_keys SET retired=? WHERE meter=? AND kid=? AND retired IS NULL",
                            (int(time.time()), meter, kid))
        return cur.rowcount == 1

    def meters(self, community: str | None = None) -> list[str]:
        sql, args = "SELECT meter FROM meters", ()
        if community is not None:
            sql, args = sql + " WHERE community=?", (community,)
        return [r[0] for r in self.conn.execute(sql + " ORDER BY meter", args)]

    def feeders(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT meter FROM meters WHERE feeder=1")}

    def mqtt_hashes(self, community: str | None = None) -> dict[str, str]:
        sql, args = "SELECT meter, mqtt_hash FROM meters", ()
        if community is not None:
            sql, args = sql + " WHERE community=?", (community,)
        return dict(self.conn.execute(sql + " ORDER BY meter", args).fetchall())
