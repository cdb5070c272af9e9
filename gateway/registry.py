"""Device registry: each meter's HMAC keys (with key ids, for rotation) and MQTT credentials,
kept in the gateway's SQLite database, and the device config file `provision` hands to a meter.

Typed API for the demo and bench, which provision hundreds of meters in-process::

    reg = Registry("gateway.db")
    cfg = reg.provision("m01", community="c1", mqtt_port=1883)   # -> DeviceConfig
    cfg.write("m01.json")
    reg.key("m01", cfg.kid)                                       # -> 32 bytes, or None
    new = reg.provision("m01", "c1", rotate=True, password=cfg.mqtt.password)  # kid 2, same login

Each member also gets a web secret at provisioning, for its member page (gateway/web/member.py):
``cfg.member_token`` once, never in the device config and never derived from the HMAC key; only
its SHA-256 is stored (the token has 192 random bits, so a slow hash would add nothing).
``issue_member_token`` re-issues it (the old link stops working), a key rotation keeps it.

Only a PBKDF2 hash of the MQTT password is stored (the format Mosquitto's password file uses),
so the plain password exists once, in the device config.

Rotation is explicit: provisioning a meter that exists is refused unless ``rotate``. A rotation
adds a key id; the older keys stay valid until the meter is first seen using the new one
(``retire_superseded``, called by the ingest's database thread) or ``retire_old`` retires them
at once (a key that leaked). The MQTT login is kept (the caller proves it knows the current
password, which is checked against the stored hash) unless ``new_password``: then the meter is
locked out of the broker until it has the new config and the broker files are regenerated.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import math
import os
import secrets
import sqlite3
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from gateway import db, meterkeys
from gateway.config import DEFAULT_INTERVAL_S
from protocols import devconfig, topics

KEY_LEN = 32
MEMBER_TOKEN_BYTES = 24  # 192 bits: guessing one is out of reach, even without the rate limit
PBKDF2_ITERATIONS = 1000
MAX_KID = 0xFFFF
MAX_SKID = 99999  # a signature line's key id has at most five digits (protocols/signature.py)


def mosquitto_hash(password: str, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """Mosquitto 2 password-file hash ``$7$<iterations>$<b64 salt>$<b64 PBKDF2-SHA512>``."""
    salt = salt or os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def mosquitto_hash_matches(password: str, hashed: str) -> bool:
    """True if ``hashed`` (``mosquitto_hash``'s format) is the hash of ``password``."""
    try:
        _, seven, iterations, salt, digest = hashed.split("$")
        if seven != "7":
            return False
        expected = mosquitto_hash(password, base64.b64decode(salt), int(iterations))
    except ValueError:  # a malformed hash (binascii.Error is a ValueError) matches nothing
        return False
    return hmac.compare_digest(expected.rsplit("$", 1)[1], digest)


def token_hash(token: str) -> str:
    """What the database keeps of a member's web secret."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_member_token() -> str:
    return secrets.token_urlsafe(MEMBER_TOKEN_BYTES)


def member_link(base_url: str, meter: str, token: str) -> str:
    """The link the operator hands a member (as text or a QR code): the page logs it in."""
    return f"{base_url.rstrip('/')}/m/{meter}?t={token}"


# The gateway's pumps, each one MQTT connection (gateway/daemon.py names them so).
GATEWAY_PUMPS = ("up", "down")


def gateway_logins(user: str) -> tuple[str, ...]:
    """The gateway's MQTT user names: the control connection's ``user`` and ``user-<pump>``.
    One login per connection, since the broker makes each connection's client id its user
    name (gateway/mosquitto_conf.py); no meter may be provisioned under any of them."""
    return (user, *(f"{user}-{pump}" for pump in GATEWAY_PUMPS))


class RegistryError(ValueError):
    pass


# --- A meter's place in the peer-to-peer market: position (km) and preference c_n.

MAX_POSITION_KM = 1000.0  # a community is local; beyond this a coordinate is a mistake
MAX_PREFERENCE = 1_000_000  # micro-currency per kWh per km: 1 currency per kWh for every km
MICRO = 1_000_000


@dataclass(frozen=True)
class Place:
    """Where a meter is for the peer-to-peer market (gateway/market/p2p.py): ``position``
    (x, y) in km, None if none was provisioned, and ``preference`` c_n in micro-currency per
    kWh per km, the premium it attaches to trading one kWh one km away."""

    position: tuple[float, float] | None = None
    preference: int = 0


def check_position(position: object) -> tuple[float, float]:
    """(x, y) in km, two finite numbers within MAX_POSITION_KM; RegistryError otherwise."""
    if not (isinstance(position, (tuple, list)) and len(position) == 2):
        raise RegistryError(f"a position is two numbers x,y in km, got {position!r}")
    for v in position:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise RegistryError(f"a position is two finite numbers x,y in km, got {position!r}")
        if abs(v) > MAX_POSITION_KM:
            raise RegistryError(f"a position coordinate is within -{MAX_POSITION_KM:g}..{MAX_POSITION_KM:g} km,"
                                f" got {v!r}")
    return float(position[0]), float(position[1])


def check_preference(preference: object) -> int:
    """c_n in micro-currency per kWh per km, an integer 0..MAX_PREFERENCE; RegistryError otherwise."""
    if isinstance(preference, bool) or not isinstance(preference, int):
        raise RegistryError(f"a preference is an integer of micro-currency per kWh per km, got {preference!r}")
    if not 0 <= preference <= MAX_PREFERENCE:
        raise RegistryError(f"a preference is 0..{MAX_PREFERENCE / MICRO:g} currency per kWh per km, got"
                            f" {preference / MICRO:g}")
    return preference


def parse_position(text: str) -> tuple[float, float]:
    """``"1.2,0.4"`` (km) as the CLI takes it."""
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        values = (float(parts[0]), float(parts[1]))
    except ValueError:
        raise RegistryError(f"--position takes x,y in km (e.g. 1.2,0.4), got {text!r}") from None
    return check_position(values)


def parse_preference(text: str) -> int:
    """A decimal number of currency per kWh per km (``"0.02"``) as micro-currency, exactly."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise RegistryError(f"--preference takes currency per kWh per km (e.g. 0.02), got {text!r}") from None
    if not value.is_finite() or value < 0:
        raise RegistryError(f"--preference is a finite number >= 0 (currency per kWh per km), got {text!r}")
    micro = value * MICRO
    if micro != micro.to_integral_value():
        raise RegistryError(f"--preference has at most 6 decimals (micro-currency), got {text!r}")
    if micro > MAX_PREFERENCE:
        raise RegistryError(f"--preference is at most {MAX_PREFERENCE / MICRO:g} currency per kWh per km, got {text!r}")
    return int(micro)


class DeviceConfig:
    """What a meter's firmware reads at boot: the schema of protocols/devconfig.py, each value
    the meter's own or the schema's default. ``settings`` overrides keys of the schema: a
    section as a dict of the keys to change (``modbus={"battery_unit": 2}``), any other key as
    its value (``ntp_host="ntp.example"``). The file's keys read as attributes, a section as a
    namespace (``cfg.mqtt.password``)."""

    def __init__(self, meter: str, community: str, kid: int, key: bytes,
                 interval_s: int = DEFAULT_INTERVAL_S, **settings: Any) -> None:
        doc = {"meter": meter, "community": community, "kid": kid, "key": key.hex(),
               "interval_s": interval_s, **devconfig.defaults()}
        _override(doc, settings, "")
        try:
            # What the firmware makes of the file is what we write: defaults for nulls included.
            read = devconfig.parse(json.dumps(doc))
        except ValueError as exc:
            raise RegistryError(f"device config: {exc}") from None
        del read["key_bytes"]
        self.doc: dict[str, Any] = read
        self.key = key
        # The member's web secret when this provisioning issued one (never in the file: the
        # meter does not need it, and whoever reads the meter's flash should not get the page).
        self.member_token: str | None = None

    def __getattr__(self, name: str) -> Any:
        # Called only for names the object lacks: the file's keys.
        try:
            value = self.__dict__["doc"][name]
        except KeyError:
            raise AttributeError(name) from None
        return SimpleNamespace(**value) if isinstance(value, dict) else value

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self.doc)

    def to_json(self) -> str:
        return json.dumps(self.doc, indent=1) + "\n"

    def write(self, path: str | Path) -> Path:
        """Write the config readable by its owner only: it holds the key and the password."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.to_json())
        os.replace(tmp, path)  # a config it replaces (a rotation) stays whole until then
        return path


def read_password(path: str | Path, meter: str) -> str:
    """The MQTT password in the device config ``path`` of ``meter`` (a rotation keeps it)."""
    try:
        doc = json.loads(Path(path).read_text())
        if doc["meter"] != meter:
            raise RegistryError(f"{path} is the device config of {doc['meter']!r}, not of {meter!r}")
        password = doc["mqtt"]["password"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"cannot read the MQTT password from {path}: {exc}") from None
    if not isinstance(password, str) or not password:
        raise RegistryError(f"{path} holds no MQTT password")
    return password


def _override(doc: dict[str, Any], settings: Mapping[str, Any], where: str) -> None:
    for name, value in settings.items():
        if name not in doc:
            raise RegistryError(f"the device config has no key {where}{name}")
        if isinstance(doc[name], dict):
            if not isinstance(value, Mapping):
                raise RegistryError(f"device config section {where}{name} takes a dict")
            _override(doc[name], value, f"{where}{name}.")
        else:
            doc[name] = value


def _given(**settings: Any) -> dict[str, Any]:
    """The settings that are not None: the others are left to the schema's defaults."""
    return {name: value for name, value in settings.items() if value is not None}


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
        mqtt_host: str | None = None,
        mqtt_port: int | None = None,
        tls: bool | None = None,
        ca: str | None = None,
        keepalive_s: int | None = None,
        interval_s: int = DEFAULT_INTERVAL_S,
        gate_closure_s: int | None = None,
        feeder: bool | None = None,
        position: tuple[float, float] | None = None,
        preference: int | None = None,
        rotate: bool = False,
        new_password: bool = False,
        retire_old: bool = False,
        member_link: bool = False,
        reserved: Collection[str] = (),
        key: bytes | None = None,
        password: str | None = None,
        **device: Any,
    ) -> DeviceConfig:
        """Create the meter, or with ``rotate`` give an existing one a new key id (see the
        module's docstring), and return its device config. ``password``: a new meter's MQTT
        password (default: random); on rotation the meter's current one, which is kept.
        ``reserved``: ids no meter may have (the gateway's MQTT logins). ``feeder`` None keeps
        what the meter was (a new meter: not the feeder). The broker settings and
        ``gate_closure_s`` left None take the schema's defaults (protocols/devconfig.py);
        ``device`` overrides other keys of the schema as DeviceConfig takes them:
        ``modbus={"battery_unit": 2}``, ``clock={...}``, ``wifi=``, ``prefs=``, ``ntp_host=``...
        ``position`` (x, y km) and ``preference`` (micro-currency per kWh per km) place the
        meter in the peer-to-peer market (``Place``); left None, a rotation keeps them and a new
        meter has no position and preference 0. A new meter gets a member web secret
        (``cfg.member_token``); a rotation keeps the meter's unless ``member_link``."""
        if not topics.valid_id(meter) or not topics.valid_id(community):
            raise RegistryError("meter and community ids are 1-32 of [A-Za-z0-9_-]")
        position = None if position is None else check_position(position)
        preference = None if preference is None else check_preference(preference)
        if meter in reserved:
            raise RegistryError(f"meter id {meter!r} is one of the gateway's MQTT logins")
        key = key if key is not None else secrets.token_bytes(KEY_LEN)
        if len(key) != KEY_LEN:
            raise RegistryError("a meter key is 32 bytes")
        now = int(time.time())
        with db.transaction(self.conn) as c:
            row = c.execute("SELECT community, mqtt_hash, feeder FROM meters WHERE meter=?", (meter,)).fetchone()
            if row is None:
                if rotate:
                    raise RegistryError(f"{meter} is not provisioned: nothing to rotate")
                password = password or secrets.token_urlsafe(18)
                c.execute("INSERT INTO meters(meter, community, created, mqtt_hash, feeder) VALUES (?,?,?,?,?)",
                          (meter, community, now, mosquitto_hash(password), int(bool(feeder))))
            else:
                password = self._rotation(c, meter, community, row, rotate, new_password, password, feeder)
            if position is not None:
                c.execute("UPDATE meters SET x_km=?, y_km=? WHERE meter=?", (*position, meter))
            if preference is not None:
                c.execute("UPDATE meters SET preference=? WHERE meter=?", (preference, meter))
            if retire_old:
                c.execute("UPDATE meter_keys SET retired=? WHERE meter=? AND retired IS NULL", (now, meter))
            kid = self._new_key(c, meter, key, now)
            token = new_member_token() if row is None or member_link else None
            if token is not None:
                c.execute("UPDATE meters SET web_hash=? WHERE meter=?", (token_hash(token), meter))
            # Inside the transaction: a config the firmware would refuse registers nothing.
            mqtt = _given(host=mqtt_host, port=mqtt_port, user=meter, password=password, tls=tls, ca=ca,
                          keepalive_s=keepalive_s)
            cfg = DeviceConfig(meter, community, kid, key, interval_s, mqtt=mqtt,
                               **_given(gate_closure_s=gate_closure_s), **device)
            cfg.member_token = token
            return cfg

    @staticmethod
    def _new_key(c: sqlite3.Connection, meter: str, key: bytes, now: int) -> int:
        """Add ``key`` as the meter's next key id (a rotation: the older ones stay valid until
        the meter is seen using it); returns the key id."""
        kid = c.execute("SELECT COALESCE(MAX(kid), 0) + 1 FROM meter_keys WHERE meter=?", (meter,)).fetchone()[0]
        if kid > MAX_KID:
            raise RegistryError("key ids exhausted")
        c.execute("INSERT INTO meter_keys(meter, kid, key, created) VALUES (?,?,?,?)", (meter, kid, key, now))
        return kid

    def rotate_key(self, meter: str) -> tuple[int, bytes]:
        """A rotation over the air (`tmeter fw rotate-key`): a new random key under the next key
        id, no new device config (the meter receives the key encrypted under its current one,
        protocols/remote.py); the older keys stay valid until it uses the new one."""
        key = secrets.token_bytes(KEY_LEN)
        with db.transaction(self.conn) as c:
            if c.execute("SELECT 1 FROM meters WHERE meter=?", (meter,)).fetchone() is None:
                raise RegistryError(f"{meter} is not provisioned")
            return self._new_key(c, meter, key, int(time.time())), key

    def reinstate(self, meter: str, kid: int) -> None:
        """After a factory reset (`tmeter fw factory-reset`) the meter signs with its provisioned
        key ``kid`` again: that key is valid again and every other key of the meter retired."""
        now = int(time.time())
        with db.transaction(self.conn) as c:
            if c.execute("UPDATE meter_keys SET retired=NULL WHERE meter=? AND kid=?", (meter, kid)).rowcount != 1:
                raise RegistryError(f"{meter} has no key {kid}")
            c.execute("UPDATE meter_keys SET retired=? WHERE meter=? AND kid<>? AND retired IS NULL", (now, meter, kid))

    @staticmethod
    def _rotation(c: sqlite3.Connection, meter: str, community: str, row: tuple[str, str, int], rotate: bool,
                  new_password: bool, password: str | None, feeder: bool | None) -> str:
        """Checks a rotation of an existing meter and updates its row; returns the password
        its new device config carries."""
        have, hashed, was_feeder = row
        if have != community:
            raise RegistryError(f"{meter} belongs to community {have}")
        if not rotate:
            raise RegistryError(f"{meter} is already provisioned; --rotate gives it a new key"
                                " (the deployed meter keeps working until it has the new config)")
        if new_password:
            password = secrets.token_urlsafe(18)
            hashed = mosquitto_hash(password)
        elif password is None:
            raise RegistryError(f"rotating {meter} keeps its MQTT password: give its current device config"
                                " (--out FILE), or --new-password")
        elif not mosquitto_hash_matches(password, hashed):
            raise RegistryError(f"the MQTT password given for {meter} is not its current one")
        c.execute("UPDATE meters SET mqtt_hash=?, feeder=? WHERE meter=?",
                  (hashed, was_feeder if feeder is None else int(feeder), meter))
        return password

    def issue_member_token(self, meter: str) -> str:
        """A new web secret for ``meter``'s member page: the old link and its sessions end."""
        token = new_member_token()
        with db.transaction(self.conn) as c:
            if c.execute("UPDATE meters SET web_hash=? WHERE meter=?", (token_hash(token), meter)).rowcount != 1:
                raise RegistryError(f"{meter} is not provisioned")
        return token

    def retire_superseded(self, newest: Mapping[str, int]) -> int:
        """Retire each meter's keys older than the key id it was just seen using (a message
        tagged and verified under it): the meter has its new config. Returns keys retired."""
        now = int(time.time())
        with db.transaction(self.conn) as c:
            return sum(c.execute("UPDATE meter_keys SET retired=? WHERE meter=? AND kid<? AND retired IS NULL",
                                 (now, meter, kid)).rowcount for meter, kid in newest.items())

    def key(self, meter: str, kid: int) -> bytes | None:
        """The meter's key ``kid`` unless unknown or retired."""
        row = self.conn.execute(
            "SELECT key FROM meter_keys WHERE meter=? AND kid=? AND retired IS NULL", (meter, kid)).fetchone()
        return bytes(row[0]) if row else None

    def held_key(self, meter: str) -> tuple[int, bytes] | None:
        """The key the meter is known to hold: its oldest valid one. A rotation's new key is
        valid before the meter has it, and the older ones are retired once it uses it
        (retire_superseded), so until then the oldest is the meter's. Awards and remote
        commands are tagged with it."""
        row = self.conn.execute(
            "SELECT kid, key FROM meter_keys WHERE meter=? AND retired IS NULL ORDER BY kid LIMIT 1",
            (meter,)).fetchone()
        return (row[0], bytes(row[1])) if row else None

    def valid_keys(self, meter: str) -> dict[int, bytes]:
        """Every valid key of the meter by key id."""
        rows = self.conn.execute("SELECT kid, key FROM meter_keys WHERE meter=? AND retired IS NULL", (meter,))
        return {kid: bytes(key) for kid, key in rows}

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

    # --- the meter's own signing keys (issue 15): only readings it signed are its readings

    def enrol(self, meter: str, pub: bytes) -> int:
        """Enrol ``pub`` (65-byte uncompressed P-256 point, made on the meter: `tmeter fw
        keygen`) as the meter's next signing key id and return it. The meter's older signing
        keys are retired (a replaced board: its key is gone with it); from now on the meter's
        readings must carry a signature under a valid key. RegistryError for a point not on
        the curve or a meter not provisioned."""
        try:
            meterkeys.load(pub)
        except meterkeys.MeterKeyError as exc:
            raise RegistryError(str(exc)) from None
        now = int(time.time())
        with db.transaction(self.conn) as c:
            if c.execute("SELECT 1 FROM meters WHERE meter=?", (meter,)).fetchone() is None:
                raise RegistryError(f"{meter} is not provisioned")
            skid = c.execute("SELECT COALESCE(MAX(skid), 0) + 1 FROM meter_signing_keys WHERE meter=?",
                             (meter,)).fetchone()[0]
            if skid > MAX_SKID:
                raise RegistryError("signing key ids exhausted")
            c.execute("UPDATE meter_signing_keys SET retired=? WHERE meter=? AND retired IS NULL", (now, meter))
            c.execute("INSERT INTO meter_signing_keys(meter, skid, pub, enrolled) VALUES (?,?,?,?)",
                      (meter, skid, pub, now))
        return skid

    def signing_key(self, meter: str, skid: int) -> bytes | None:
        """The meter's public key ``skid`` (65-byte point) unless unknown or retired."""
        row = self.conn.execute("SELECT pub FROM meter_signing_keys WHERE meter=? AND skid=? AND retired IS NULL",
                                (meter, skid)).fetchone()
        return bytes(row[0]) if row else None

    def signing_keys(self, meter: str) -> dict[int, bytes]:
        """Every public key the meter ever enrolled, retired ones included (for export and
        audit: its older readings are signed under them)."""
        rows = self.conn.execute("SELECT skid, pub FROM meter_signing_keys WHERE meter=? ORDER BY skid", (meter,))
        return {skid: bytes(pub) for skid, pub in rows}

    def valid_signing_keys(self, meter: str) -> dict[int, bytes] | None:
        """What ingest needs: None if the meter never enrolled a key (it sends unsigned
        readings), else its valid keys by skid (empty once all are retired: nothing verifies)."""
        rows = self.conn.execute("SELECT skid, pub, retired FROM meter_signing_keys WHERE meter=?",
                                 (meter,)).fetchall()
        if not rows:
            return None
        return {skid: bytes(pub) for skid, pub, retired in rows if retired is None}

    def meters(self, community: str | None = None) -> list[str]:
        sql, args = "SELECT meter FROM meters", ()
        if community is not None:
            sql, args = sql + " WHERE community=?", (community,)
        return [r[0] for r in self.conn.execute(sql + " ORDER BY meter", args)]

    def places(self, community: str | None = None) -> dict[str, Place]:
        """Every meter's place in the peer-to-peer market."""
        sql, args = "SELECT meter, x_km, y_km, preference FROM meters", ()
        if community is not None:
            sql, args = sql + " WHERE community=?", (community,)
        return {m: Place(None if x is None or y is None else (x, y), pref)
                for m, x, y, pref in self.conn.execute(sql + " ORDER BY meter", args)}

    def place(self, meter: str) -> Place | None:
        row = self.conn.execute("SELECT x_km, y_km, preference FROM meters WHERE meter=?", (meter,)).fetchone()
        if row is None:
            return None
        return Place(None if row[0] is None or row[1] is None else (row[0], row[1]), row[2])

    def web_hash(self, meter: str) -> str | None:
        row = self.conn.execute("SELECT web_hash FROM meters WHERE meter=?", (meter,)).fetchone()
        return row[0] if row else None

    def feeders(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT meter FROM meters WHERE feeder=1")}

    def mqtt_hashes(self, community: str | None = None) -> dict[str, str]:
        sql, args = "SELECT meter, mqtt_hash FROM meters", ()
        if community is not None:
            sql, args = sql + " WHERE community=?", (community,)
        return dict(self.conn.execute(sql + " ORDER BY meter", args).fetchall())
