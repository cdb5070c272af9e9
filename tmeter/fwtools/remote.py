"""Remote configuration from the operator's machine (`tmeter fw config`, `fw rotate-key`,
`fw factory-reset`): one command to one meter over MQTT, and the meter's answer.

The commands are tagged with the meter's current key, which only the gateway's database holds:
tmeter/commands/fwremote.py reads it (and makes a rotation's new key there) and hands it in; this
module never touches the database (tmeter/fwtools must not import gateway). Messages and
topics: protocols/remote.py; the meter's side: firmware/remote.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from protocols import remote as msgs
from protocols import topics
from protocols.errors import ProtocolError
from tmeter.fwtools.ota import Broker, OtaError, connect


class RemoteError(OtaError):
    """A command that cannot be sent or was not answered; the message is one line."""


def parse_settings(pairs: list[str]) -> dict[str, int]:
    """``["poll_s=30", "prefs.import_wtp=250000"]`` -> settings, each checked as the meter will."""
    if not pairs:
        raise RemoteError("no settings: give NAME=VALUE ... (settable: "
                          + ", ".join(sorted(msgs.SETTINGS)) + ")")
    out: dict[str, int] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise RemoteError(f"{pair!r}: expected NAME=VALUE")
        try:
            value = int(text, 10)
        except ValueError:
            raise RemoteError(f"{name}: {text!r} is not an integer") from None
        try:
            msgs.check_setting(name, value)
        except ProtocolError as exc:
            raise RemoteError(f"{name}: refused: {exc}") from None
        out[name] = value
    try:
        msgs.check_settings(out)
    except ProtocolError as exc:
        raise RemoteError(str(exc)) from None
    return out


def new_n() -> int:
    """A command number above every earlier one of this tool: milliseconds since 1970."""
    return time.time_ns() // 1_000_000


class Exchange:
    """Publishes commands to one meter and waits for its answers (paho's loop thread)."""

    def __init__(self, broker: Broker, meter: str) -> None:
        if not topics.valid_id(meter):
            raise RemoteError(f"meter id {meter!r}: expected 1-32 of A-Z a-z 0-9 _ -")
        self.meter = meter
        self.down = msgs.topic(broker.community, meter, "down")
        self.answers: list[bytes] = []
        self.lock = threading.Lock()
        self.got = threading.Condition(self.lock)
        up = msgs.topic(broker.community, meter, "up")
        self.client = connect(broker, "tmeter-cfg", lambda c, *_a: c.subscribe(up, 1),
                              self._on_message)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()

    def _on_message(self, _c, _u, m) -> None:
        with self.got:
            self.answers.append(bytes(m.payload))
            self.got.notify_all()

    def ask(self, make: Callable[[int, int], bytes], keys: dict[int, bytes], kid: int,
            timeout: float) -> dict:
        """Publish ``make(n, kid)`` (tagged with key ``kid`` of ``keys``) and return the meter's
        verified answer to it. Sent once more when the meter refuses it as replayed (this
        machine's clock behind an earlier command's: then above the meter's last n) or under an
        unknown key while it signs with another valid one (a re-flash the gateway has not seen
        yet). RemoteError when no answer comes within ``timeout``."""
        n = new_n()
        for _ in range(3):
            answer = self._one(make(n, kid), n, keys, timeout)
            if answer["reason"] == "replayed":
                n = answer["last"] + 1
            elif answer["reason"] == "unknown_key" and answer["kid"] in keys \
                    and answer["kid"] != kid:
                kid = answer["kid"]
            else:
                break
        return answer

    def _one(self, payload: bytes, n: int, keys: dict[int, bytes], timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        with self.got:
            self.answers.clear()
        self.client.publish(self.down, payload, qos=1)
        with self.got:
            while True:
                while self.answers:
                    try:
                        answer = msgs.decode_answer(self.answers.pop(0), self.meter, keys)
                    except ProtocolError:
                        continue  # not the meter's (its tag): ignored
                    # n 0: a command the meter could not read as one (forged, damaged, old key)
                    if answer["n"] in (n, 0):
                        return answer
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RemoteError(f"{self.meter}: no answer within {timeout:g} s (offline,"
                                      " or a rotation or reset waits for its queue to empty)")
                self.got.wait(left)
