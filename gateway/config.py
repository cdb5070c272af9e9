"""The gateway's TOML configuration (see deploy/gateway.toml for every key, with comments).

One schema (pydantic v2) checks the whole configuration before the gateway creates anything,
whether it comes from a file (``load(path)``), a dict (``from_dict``) or code
(``GatewayConfig(community="c1", db=path)``, ``cfg.mqtt.port = ...``): types are strict (no
"1883" for 1883, no true for 1), unknown keys are refused (a typo is an error at start-up, not a
silently ignored setting), enumerations are the values the implementing code knows, and ranges
are those the code can work with. Every mistake becomes one line of ``ConfigError`` naming the
file, the dotted key and what is allowed, e.g.
``/etc/tmeter/gateway.toml: mqtt.port: expected an integer 1..65535, got "1883"``.
Everything has a default, so a test or the demo can build a config in code.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from gateway.market import ALLOCATIONS, MECHANISMS
from protocols.canonical import TEXT_CHARS
from protocols.topics import valid_id


class ConfigError(ValueError):
    """One line per mistake, each naming where (file and dotted key) and what is allowed."""


# --- Value types: each carries, as its description, what the error line says is allowed.

def _checked(test: Any, what: str) -> AfterValidator:
    def check(value: Any) -> Any:
        if not test(value):
            raise ValueError(what)  # the line is the field's description; this is a fallback
        return value
    return AfterValidator(check)


_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
# C2SP signed-note key names (the checkpoint origin is one) have no spaces and no "+"; the
# checkpoint message carries the origin as canonical text of at most 128 characters.
_ORIGIN_CHARS = set(TEXT_CHARS) - {" ", "+"}


def _name(s: str, longest: int) -> bool:
    return 0 < len(s) <= longest and set(s) <= _NAME_CHARS


def _choices(values: tuple[Any, ...]) -> str:
    shown = [json.dumps(v) for v in values]
    return " or ".join(shown) if len(shown) <= 2 else "one of " + ", ".join(shown)


PosInt = Annotated[int, Field(gt=0, description="a positive integer")]
NonNegInt = Annotated[int, Field(ge=0, description="an integer >= 0")]
PosFloat = Annotated[float, Field(gt=0, description="a finite number above 0")]
Port = Annotated[int, Field(ge=1, le=65535, description="an integer 1..65535")]
FilePath = Annotated[str, Field(min_length=1, description="a file path")]
Host = Annotated[str, Field(min_length=1, pattern=r"^\S+$", description="a host name or address")]
Id = Annotated[str, _checked(valid_id, "id"),
               Field(description="an id: 1-32 characters of A-Z a-z 0-9 _ - (protocols/topics.py)")]


class _Checked(type(BaseModel)):  # type: ignore[misc]
    """Construction in code (``MqttConfig(port=0)``) answers with a ConfigError too. In the
    metaclass, not in ``__init__``: pydantic calls an overridden ``__init__`` for every nested
    table it validates, and a ConfigError raised there would lose the key's place."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except ValidationError as exc:
            raise ConfigError(_explain(exc, cls, "")) from None


class _Section(BaseModel, metaclass=_Checked):
    """A table of the file. A ValidationError becomes a ConfigError on construction and on
    assignment too, so code that builds or changes a config meets the same lines as a file."""

    model_config = ConfigDict(strict=True, extra="forbid", validate_assignment=True,
                              allow_inf_nan=False, revalidate_instances="never")

    def __setattr__(self, name: str, value: Any) -> None:
        before = self.__dict__.get(name)
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            # pydantic has stored the value when a check across keys refuses it: undo that,
            # so a refused assignment changes nothing.
            if name in self.__dict__:
                self.__dict__[name] = before
            raise ConfigError(_explain(exc, type(self), "")) from None


def _rule(key: str, expected: str, got: Any) -> PydanticCustomError:
    """A check across keys, reported at ``key``; ``{p}`` in ``expected`` is the table's prefix."""
    return PydanticCustomError("config_rule", "{key}: {expected}",
                               {"key": key, "expected": expected, "got": got})


class MqttConfig(_Section):
    host: Host = "127.0.0.1"
    port: Port = 1883
    user: Annotated[str, _checked(lambda s: s == "" or _name(s, 64), "user"), Field(
        description="empty (no login) or 1-64 characters of A-Z a-z 0-9 _ -")] | None = None
    password: Annotated[str, Field(pattern=r"^[^\n\r]*$", description="a string on one line")] | None = None
    tls: Annotated[bool, Field(description="true or false")] = False
    ca: Annotated[str, Field(description="a CA file path (empty: the system CAs)")] | None = None
    # Fixed, so the uplink pump ("<id>-up") keeps its session across restarts.
    client_id: Annotated[str, _checked(lambda s: _name(s, 64), "client id"), Field(
        description="1-64 characters of A-Z a-z 0-9 _ -")] = "tmeter-gateway"
    # MQTT 3.1.1 section 3.1.2.10: a 16-bit number of seconds; 0 would switch keep-alive off.
    keepalive_s: Annotated[int, Field(ge=1, le=65535, description="an integer 1..65535")] = 30


class P2PConfig(_Section):
    """The peer-to-peer market (mechanism "p2p", gateway/market/p2p.py) as the daemon runs it:
    the trading graph of each member's k nearest peers by provisioned position
    (``tmeter provision --position``), distances gamma_nm from the positions, each member's
    preference c_n from its provisioning (``--preference``). A member provisioned without a
    position trades with the grid only (counted ``p2p_unplaced`` and logged at each clearing)."""

    k: Annotated[int, Field(ge=1, le=1000, description=(
        "an integer 1..1000: each member trades with its k nearest peers by provisioned position"
        " (k >= members - 1: every pair)"))] = 10
    # The grid is a peer of every member (gateway/market/network.py); at distance 0 buying or
    # selling at the tariff carries no preference premium, so a member's c_n weighs distant
    # peers against the grid: the two-villages effect of Sorin, Bobo & Pinson (2019).
    grid_distance_km: Annotated[float, Field(ge=0, le=1000, description=(
        "a number 0..1000: the grid's distance from every member, km, in the preference term"))] = 0.0


class MarketConfig(_Section):
    mechanism: Annotated[Literal[MECHANISMS], Field(  # type: ignore[valid-type]
        description=_choices(MECHANISMS))] = "uniform"
    import_price: Annotated[int, Field(description="an integer (micro-currency per kWh)")] = 300_000
    export_price: Annotated[int, Field(description="an integer (micro-currency per kWh)")] = 50_000
    # How the grid bill is shared (gateway/market/terms.py): "marginal" clears to the welfare
    # optimum at the community's marginal price; "equal" and "proportional" to the equilibrium of
    # members carrying their share of the grid bill, which imports more and costs the community
    # more (README, `tmeter study collective`).
    allocation: Annotated[Literal[ALLOCATIONS], Field(  # type: ignore[valid-type]
        description=_choices(ALLOCATIONS))] = "marginal"
    capacity_wh: Annotated[int, Field(ge=0, description="an integer >= 0 (Wh per interval)")] | None = None
    p2p: P2PConfig = Field(default_factory=P2PConfig)

    @model_validator(mode="after")
    def _no_arbitrage(self) -> MarketConfig:
        # gateway/market/terms.py: a feed-in price above the retail price would let the
        # community buy and resell without limit, and every clearing would fail.
        if self.export_price > self.import_price:
            raise _rule("export_price", f"expected at most {{p}}import_price ({self.import_price})",
                        self.export_price)
        return self


class SettlementConfig(_Section):
    grace_s: NonNegInt = 120  # settle this long after an interval ends, so readings can arrive
    feeder_meter: Id | None = None  # meter id at the community's connection point
    # Allowed |feeder - members| as a fraction of all metered energy ...
    loss_tolerance: Annotated[float, Field(ge=0, le=1, description="a number 0..1")] = 0.05
    loss_tolerance_wh: NonNegInt = 10  # ... and at least this many Wh (meter resolution)
    # The wall clock moved this much more (or less) than the monotonic clock: a clock jump, and
    # the scheduler settles nothing until the clock is believed again (gateway/daemon.py).
    clock_jump_s: PosInt = 300


class IngestConfig(_Section):
    per_meter_queue: PosInt = 64  # bounded per meter: a flood from one meter is dropped, not queued
    total_queue: PosInt = 50_000
    batch: PosInt = 512  # records per transaction (group commit)
    max_power_w: PosInt = 200_000  # a reading above this average power is out of range
    time_slack_s: NonNegInt = 300  # t0/t1 may stray this far outside their interval
    future_intervals: NonNegInt = 1  # readings/bids this many intervals ahead of our clock pass
    max_outage_s: PosInt = 7 * 86400  # the longest span one gap record (partial, offline) may cover
    settlement_window_s: PosInt = 7 * 86400  # older records are quarantined, not settled
    # An ack is itself the acknowledgement the meter's store-and-forward waits for: should one
    # be lost, the meter sends its record again and is acked "duplicate". QoS 1 would add a
    # second retransmission layer and a PUBACK per reading, costing a third of ingest
    # throughput (bench/ingest.py). Sparkplug B sends its data at QoS 0 on the same reasoning.
    # An integer field, not Literal[0, 1]: a Literal takes true for 1 (True == 1 in Python).
    ack_qos: Annotated[int, Field(ge=0, le=1, description="0 or 1")] = 0
    ack_window: PosInt = 20  # with ack_qos 1: acks awaiting PUBACK at once; more wait in the pump


class LedgerConfig(_Section):
    origin: Annotated[str, _checked(lambda s: len(s) <= 128 and set(s) <= _ORIGIN_CHARS, "origin"), Field(
        description='empty (tmeter.local/<community>) or at most 128 printable ASCII characters '
                    'with no space, "+", quote or backslash (a C2SP signed-note key name)')] = ""
    # Ed25519 PEM; default: <db>.ledger-key.pem, created on first run.
    key_file: Annotated[str, Field(description="a file path (empty: <db>.ledger-key.pem)")] = ""


class StatusConfig(_Section):
    http_host: Host = "127.0.0.1"
    # None: no HTTP endpoint; 0: any free port (tests).
    http_port: Annotated[int, Field(ge=0, le=65535, description="an integer 0..65535 (0: any free port)")] \
        | None = 8080
    publish_s: PosFloat = 10.0


class WebConfig(_Section):
    """The member page and operator view (gateway/web/member.py), served on [status]'s port."""

    # Where members reach the gateway (a reverse proxy, a LAN name): the base of the member
    # links `tmeter provision` prints. Empty: http://<status.http_host>:<status.http_port>.
    public_url: Annotated[str, Field(pattern=r"^(https?://[^\s?#]+)?$",
                                     description="empty or an http:// or https:// URL without query")] = ""
    # The operator view's secret: a file holding one line, created (mode 0600) at first start.
    operator_token_file: Annotated[str, Field(description="a file path (empty: <db>.operator-token)")] = ""
    session_s: Annotated[int, Field(ge=60, le=366 * 86400, description="an integer 60..31622400 (seconds)")] \
        = 30 * 86400
    # Failed logins (a wrong link) one client address may make per window before it is refused (429).
    login_failures: PosInt = 10
    login_window_s: PosInt = 600


class InfluxConfig(_Section):
    enabled: Annotated[bool, Field(description="true or false")] = False
    url: Annotated[str, Field(pattern=r"^https?://\S+$", description="an http:// or https:// URL")] \
        = "http://127.0.0.1:8086"
    token: Annotated[str, Field(description="a string")] = ""
    org: Annotated[str, Field(description="a string")] = "tmeter"
    bucket: Annotated[str, Field(min_length=1, description="a bucket name")] = "tmeter"
    batch: PosInt = 500
    flush_s: PosFloat = 2.0
    retry_max_s: PosFloat = 30.0


class HomeAssistantConfig(_Section):
    """MQTT discovery and plain JSON states for Home Assistant (gateway/ops/homeassistant.py)."""

    enabled: Annotated[bool, Field(description="true or false")] = False
    discovery_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$",
                                           description="a topic level of [A-Za-z0-9_-]")] = "homeassistant"
    publish_s: PosFloat = 60.0
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="an ISO 4217 code such as EUR")] = "EUR"
    # The broker login Home Assistant connects with (mosquitto-config adds it with read access
    # to discovery and states only); empty: none is generated.
    user: Annotated[str, Field(pattern=r"^([A-Za-z0-9_-]{1,32})?$", description="a login name or empty")] = ""
    password: Annotated[str, Field(description="a string")] = ""

    @model_validator(mode="after")
    def _login_has_a_password(self) -> HomeAssistantConfig:
        if self.user and not self.password:
            raise _rule("password", "expected a password for {p}user", self.password)
        return self


class ClockConfig(_Section):
    """Simulated time: t = start + (now - epoch) * speed (protocols/simclock.py). All unset: the
    wall clock."""
    start: Annotated[float, Field(description="a finite number (unix seconds)")] | None = None
    epoch: Annotated[float, Field(description="a finite number (unix seconds)")] | None = None
    speed: PosFloat | None = 1.0  # None (in code; a file leaves the key out): 1, as simclock says


DEFAULT_INTERVAL_S = 900
SYNCHRONOUS = ("FULL", "NORMAL", "EXTRA", "OFF")  # the levels gateway/db.py's connect() accepts


class GatewayConfig(_Section):
    community: Id = "c1"
    db: FilePath = "gateway.db"
    interval_s: PosInt = DEFAULT_INTERVAL_S
    gate_closure_s: NonNegInt = 60
    # SQLite's fsync policy (https://sqlite.org/pragma.html#pragma_synchronous): FULL survives
    # power loss, NORMAL a crash.
    synchronous: Annotated[Literal[SYNCHRONOUS], Field(  # type: ignore[valid-type]
        description=_choices(SYNCHRONOUS))] = "FULL"
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    market: MarketConfig = Field(default_factory=MarketConfig)
    settlement: SettlementConfig = Field(default_factory=SettlementConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
    status: StatusConfig = Field(default_factory=StatusConfig)
    influx: InfluxConfig = Field(default_factory=InfluxConfig)
    homeassistant: HomeAssistantConfig = Field(default_factory=HomeAssistantConfig)
    web: WebConfig = Field(default_factory=WebConfig)
    clock: ClockConfig = Field(default_factory=ClockConfig)

    @model_validator(mode="after")
    def _gate_before_interval(self) -> GatewayConfig:
        if self.gate_closure_s >= self.interval_s:
            raise _rule("gate_closure_s", f"expected an integer 0..{self.interval_s - 1}, below "
                        f"{{p}}interval_s ({self.interval_s})", self.gate_closure_s)
        return self

    @property
    def origin(self) -> str:
        return self.ledger.origin or f"tmeter.local/{self.community}"

    @property
    def key_path(self) -> Path:
        return Path(self.ledger.key_file or f"{self.db}.ledger-key.pem")

    @property
    def operator_token_path(self) -> Path:
        return Path(self.web.operator_token_file or f"{self.db}.operator-token")

    @property
    def web_url(self) -> str:
        """The base URL of the member links (no trailing slash)."""
        return (self.web.public_url or f"http://{self.status.http_host}:{self.status.http_port}").rstrip("/")


# --- Error lines


def _shown(value: Any) -> str:
    """A value as the file spells it (strings quoted), short."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, float) and not math.isfinite(value):
        text = str(value)
    elif isinstance(value, dict):
        text = "a table"
    elif isinstance(value, list):
        text = "an array"
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _walk(root: type[BaseModel], loc: tuple[Any, ...]) -> tuple[list[str], type[BaseModel], FieldInfo | None]:
    """The key names along ``loc``, the table the last one is in, and its field (None if the
    table has no such key)."""
    names: list[str] = []
    table: type[BaseModel] = root
    info: FieldInfo | None = None
    for part in loc:
        if not isinstance(part, str):
            break  # a union member's tag: the field was found already
        if info is not None:
            sub = info.annotation
            if not (isinstance(sub, type) and issubclass(sub, BaseModel)):
                break
            table = sub
        names.append(part)
        info = table.model_fields.get(part)
        if info is None:
            break
    return names, table, info


def _line(error: Any, root: type[BaseModel], prefix: str) -> str:
    names, table, info = _walk(root, tuple(error["loc"]))
    if error["type"] == "config_rule":
        ctx = error["ctx"]
        dotted = "".join(f"{n}." for n in names)
        expected = ctx["expected"].replace("{p}", prefix + dotted)
        return f"{prefix}{dotted}{ctx['key']}: {expected}, got {_shown(ctx['got'])}"
    key = prefix + ".".join(names)
    if error["type"] == "extra_forbidden" or info is None:
        where = f"[{'.'.join(names[:-1])}]" if len(names) > 1 else "the top level"
        return f"{key}: unknown key; {where} has {', '.join(table.model_fields)}"
    sub = info.annotation
    if isinstance(sub, type) and issubclass(sub, BaseModel):
        return f"{key}: expected a table [{key}], got {_shown(error['input'])}"
    return f"{key}: expected {_allowed(info) or error['msg']}, got {_shown(error['input'])}"


def _allowed(info: FieldInfo) -> str | None:
    """What a key allows: its description, or for ``X | None`` (None: the key left out, TOML
    has no null) the description X carries."""
    if info.description:
        return info.description
    for arg in get_args(info.annotation):
        for meta in getattr(arg, "__metadata__", ()):
            if isinstance(meta, FieldInfo) and meta.description:
                return meta.description
    return None


def _explain(exc: ValidationError, root: type[BaseModel], prefix: str) -> str:
    return "\n".join(_line(e, root, prefix) for e in exc.errors(include_url=False))


def _validated(data: Any, where: str) -> GatewayConfig:
    try:
        return GatewayConfig.model_validate(data)
    except ValidationError as exc:
        lines = _explain(exc, GatewayConfig, "").splitlines()
        raise ConfigError("\n".join(where + line for line in lines)) from None


def from_dict(data: dict[str, Any]) -> GatewayConfig:
    """The config the tables of ``data`` give (as tomllib reads a file); ConfigError if any
    value is not allowed."""
    return _validated(data, "")


def _read(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a directory, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")  # TOML 1.0: "A TOML file must be a valid UTF-8 encoded Unicode document"
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}: not UTF-8 (line {line}), as TOML must be") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load(path: str | Path) -> GatewayConfig:
    """The config in the TOML file at ``path``; ConfigError (one line per mistake) if the file
    cannot be read or a value is not allowed."""
    path = Path(path)
    cfg = _validated(_read(path), f"{path}: ")
    # Relative paths in a config file are relative to the file, as a reader would expect.
    if not Path(cfg.db).is_absolute():
        cfg.db = str(path.parent / cfg.db)
    if cfg.ledger.key_file and not Path(cfg.ledger.key_file).is_absolute():
        cfg.ledger.key_file = str(path.parent / cfg.ledger.key_file)
    if cfg.web.operator_token_file and not Path(cfg.web.operator_token_file).is_absolute():
        cfg.web.operator_token_file = str(path.parent / cfg.web.operator_token_file)
    if cfg.mqtt.ca and not Path(cfg.mqtt.ca).is_absolute():
        cfg.mqtt.ca = str(path.parent / cfg.mqtt.ca)
    return cfg
