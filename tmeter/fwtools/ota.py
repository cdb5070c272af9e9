"""Over-the-air updates from the operator's machine (`tmeter fw ota`): the signed manifest of a
bundle, and the rollout that offers it to meters in waves and serves their chunk requests.

The offer names the release's file list (one line per file: path, size, SHA-256), which meters
fetch as file 0 and read back line by line; the bundle's files are files 1..n.
The bundle is one target of a `tmeter fw build` output (``build/firmware/xtensawin`` for boards,
``build/firmware/unix`` for the unix port): every file under its ``firmware/`` and
``protocols/`` folders. The manifest is signed with the community's release key (a file of 64
hex digits), which the meters are provisioned with (config.json ``release_key``) and which is
not kept in the gateway's database (protocols/ota.py says why; issue 15 replaces it with a
public key). Messages and topics: protocols/ota.py; the meter's side: firmware/ota.py.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from protocols import canonical, meterlink, otahost, topics, trailer
from protocols import ota as msgs
from protocols.errors import ProtocolError

PACKAGES = ("firmware", "protocols")


class OtaError(Exception):
    """A bundle, key or meter the rollout cannot use; the message is one line for the operator."""


def read_key(path: Path) -> bytes:
    """The release key in the file at ``path``: 32 bytes as 64 hex digits (whitespace ignored)."""
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise OtaError(f"{path}: cannot read the release key: {exc}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise OtaError(f"{path}: the release key must be 64 hex digits") from None
    if len(key) != 32:
        raise OtaError(f"{path}: the release key must be 32 bytes (64 hex digits), not {len(key)}")
    return key


def bundle_files(bundle: Path) -> list[Path]:
    """The files of a bundle, relative to it, sorted as the manifest lists them."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise OtaError(f"{bundle}: no such bundle folder (a `tmeter fw build` target)")
    if target_of(bundle).endswith("romfs"):
        if not (bundle / msgs.IMAGE).is_file():
            raise OtaError(f"{bundle}: not a ROMFS bundle (no {msgs.IMAGE})")
        return [Path(msgs.IMAGE)]
    files = sorted(p.relative_to(bundle) for pkg in PACKAGES if (bundle / pkg).is_dir()
                   for p in (bundle / pkg).rglob("*") if p.is_file())
    names = {str(f) for f in files}
    if "firmware/main.mpy" not in names and "firmware/main.py" not in names:
        raise OtaError(f"{bundle}: not a firmware bundle (no firmware/main)")
    return files


def target_of(bundle: Path) -> str:
    """The target (protocols/ota.py TARGETS) from the bundle folder's name (what `tmeter fw
    build` writes), "unix" for any other name."""
    name = Path(bundle).resolve().name
    return name if name in msgs.TARGETS else "unix"


@dataclass
class Release:
    """A bundle as offered: the offer's fields, the file list (file 0) and the files' paths."""

    offer: dict
    listing: bytes
    paths: list[str]

    @property
    def version(self) -> int:
        return int(self.offer["version"])


def manifest(bundle: Path, version: int, rkid: int = 1, target: str | None = None) -> Release:
    """The release of the bundle at ``bundle``: each file's path, size and SHA-256 in its list,
    the list's size and hash in its offer."""
    files = []
    for rel in bundle_files(bundle):
        data = (Path(bundle) / rel).read_bytes()
        files.append([rel.as_posix(), len(data), hashlib.sha256(data).hexdigest()])
    listing = otahost.file_list(files)
    try:
        msg = otahost.offer(version, target or target_of(bundle), rkid, listing)
    except ProtocolError as exc:
        raise OtaError(f"{bundle}: cannot be offered: {exc}") from None
    return Release(msg, listing, [f[0] for f in files])


def signed_offer(bundle: Path, version: int, key: bytes, rkid: int = 1,
                 target: str | None = None) -> tuple[Release, bytes]:
    """(release, offer payload signed with the release ``key``)."""
    rel = manifest(bundle, version, rkid, target)
    try:
        return rel, otahost.encode_offer(rel.offer, key)
    except ProtocolError as exc:
        raise OtaError(f"{bundle}: cannot be offered: {exc}") from None


def version_number(text: str) -> int:
    """1.4.0 -> 10400, the status's fw counter (major * 10000 + minor * 100 + patch)."""
    parts = text.split(".")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) != 3 or not all(0 <= n < 100 for n in nums) or not 0 < nums[0] < 100:
        raise OtaError(f"version {text!r}: expected MAJOR.MINOR.PATCH, each 0-99 (e.g. 1.4.0)")
    return nums[0] * 10000 + nums[1] * 100 + nums[2]


class Server:
    """Serves the chunk requests of meters for one signed bundle."""

    def __init__(self, bundle: Path, release: Release) -> None:
        self.version = release.version
        # File 0 is the list, files 1..n the bundle's in the list's order.
        self.data = [release.listing] + [(Path(bundle) / p).read_bytes() for p in release.paths]
        self.served: dict[str, int] = {}

    def answer(self, payload: bytes) -> tuple[str, bytes] | None:
        """(meter, chunk payload) for a request, None for one that is not ours to serve."""
        try:
            req = otahost.decode_request(payload)
        except ProtocolError:
            return None
        if req["version"] != self.version or req["file"] >= len(self.data):
            return None
        data = self.data[req["file"]][req["off"]:req["off"] + req["n"]]
        self.served[req["meter"]] = self.served.get(req["meter"], 0) + len(data)
        return req["meter"], otahost.chunk(self.version, req["file"], req["off"], data)


# -- the rollout -------------------------------------------------------------------------------
@dataclass
class MeterState:
    meter: str
    fw: int | None = None        # from the retained status (None: no status seen)
    online: int = 0
    trial: int = 0
    refused: int = 0
    served: int = 0              # bytes of chunks served to it
    state: str = "waiting"       # waiting, offered, fetching, done, failed


@dataclass
class Broker:
    host: str
    port: int
    community: str
    user: str | None = None
    password: str | None = None
    tls: bool = False
    ca: str | None = None


def connect(broker: Broker, default_id: str, on_connect, on_message):  # noqa: ANN001, ANN201
    """A paho client logged in to ``broker`` (as its user, or ``default_id`` anonymously), its
    loop running, once the subscription ``on_connect`` makes is acknowledged (10 s at most)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=broker.user or default_id,
                         clean_session=True)
    if broker.user:
        client.username_pw_set(broker.user, broker.password)
    if broker.tls:
        client.tls_set(ca_certs=broker.ca or None)
    ready = threading.Event()
    client.on_connect = on_connect
    client.on_message = on_message
    client.on_subscribe = lambda *_a: ready.set()
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except OSError as exc:
        raise OtaError(f"broker {broker.host}:{broker.port}: {exc}") from None
    client.loop_start()
    if not ready.wait(10):
        client.loop_stop()
        client.disconnect()
        raise OtaError(f"broker {broker.host}:{broker.port}: no subscription (login or ACL?)")
    return client


def read_status(payload: bytes) -> dict | None:
    """The body of a meter's retained status, schema-checked. Its tag is not checked: the tool
    holds no meter keys; only the meter may write its status topic (the broker's ACL)."""
    try:
        body, _kid, _tag = trailer.split(bytes(payload))
        msg = canonical.parse(body)
        if meterlink.validate(msg) != "status":
            return None
        return msg
    except ProtocolError:
        return None


class Rollout:
    """Connects to the community's broker, keeps every meter's retained status, serves chunks."""

    def __init__(self, broker: Broker, meters: list[str], server: Server | None = None,
                 offer: bytes | None = None) -> None:
        for m in meters:
            if not topics.valid_id(m):
                raise OtaError(f"meter id {m!r}: expected 1-32 of A-Z a-z 0-9 _ -")
        self.broker = broker
        self.server = server
        self.offer = offer
        self.lock = threading.Lock()
        self.meters = {m: MeterState(m) for m in meters}
        self.client = connect(broker, "tmeter-ota", self._on_connect, self._on_message)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def _on_connect(self, client, _u, _f, rc, _p=None) -> None:
        c = self.broker.community
        client.subscribe([(topics.meter_filter(c, "status"), 1),
                          (f"{topics.ROOT}{c}/ota/+/up", 1)])

    def _on_message(self, client, _u, m) -> None:
        try:
            _c, meter, kind = otahost.parse_topic(m.topic)
        except ProtocolError:
            kind = "status"
            meter = m.topic.split("/")[-2]
        st = self.meters.get(meter)
        if st is None:
            return
        if kind == "up":
            answer = self.server.answer(m.payload) if self.server is not None else None
            if answer is None or answer[0] != meter:
                return
            with self.lock:
                st.served = self.server.served.get(meter, 0)
                if st.state == "offered":
                    st.state = "fetching"
            # QoS 0, as the meter asks (firmware/ota.py): a lost chunk is asked again.
            client.publish(otahost.topic(self.broker.community, meter, "down"), answer[1], qos=0)
            return
        msg = read_status(m.payload)
        if msg is None or msg["meter"] != meter:
            return
        with self.lock:
            st.fw = msg["c"].get("fw")
            st.online = msg["online"]
            st.trial = msg["c"].get("ota_trial_n", 0)
            st.refused = msg["c"].get("ota_refused", 0)

    def settle(self, seconds: float) -> None:
        """Give retained statuses time to arrive."""
        time.sleep(seconds)

    def send_offer(self, meter: str) -> None:
        assert self.offer is not None
        self.client.publish(otahost.topic(self.broker.community, meter, "down"), self.offer, qos=1)

    def wave(self, wave: list[str], version: int, timeout: float, on_tick=None) -> bool:
        """Offer to every meter of ``wave`` until each reports ``version``, committed and online
        in its retained status; False if one has not by ``timeout`` (or rolled back)."""
        deadline = time.monotonic() + timeout
        last_offer: dict[str, float] = {}
        while time.monotonic() < deadline:
            pending = 0
            with self.lock:
                states = [self.meters[m] for m in wave]
            for st in states:
                if st.fw == version and st.online and not st.trial:
                    st.state = "done"
                    continue
                if st.refused == version and st.fw != version:
                    st.state = "failed"  # it rolled back
                    continue
                pending += 1
                # Offered again every 10 s until it fetches (a meter offline or reconnecting
                # misses a non-retained offer); a meter already fetching ignores a repeat.
                if st.state in ("waiting", "offered") and \
                        time.monotonic() - last_offer.get(st.meter, -1e9) > 10:
                    self.send_offer(st.meter)
                    last_offer[st.meter] = time.monotonic()
                    st.state = "offered"
            if on_tick is not None:
                on_tick()
            if not pending:
                break
            time.sleep(0.2)
        ok = True
        for m in wave:
            st = self.meters[m]
            if st.state != "done":
                st.state = "failed"
                ok = False
        return ok


def table(states: list[MeterState], title: str):
    """A rich table of the meters' OTA state."""
    from rich.table import Table

    t = Table(title=title)
    for col in ("meter", "version", "online", "trial boots", "rolled back", "served", "state"):
        t.add_column(col)
    for st in states:
        t.add_row(st.meter, fw_text(st.fw), "yes" if st.online else "no", str(st.trial),
                  fw_text(st.refused) if st.refused else "", f"{st.served // 1024} KB", st.state)
    return t


def fw_text(v: int | None) -> str:
    return "?" if not v else f"{v // 10000}.{v // 100 % 100}.{v % 100}"
