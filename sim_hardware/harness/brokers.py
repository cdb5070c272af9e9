"""The MQTT broker of a community run: one the run starts (the embedded amqtt broker, or
Mosquitto) or one someone else runs (``--broker HOST:PORT``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from sim_hardware.harness.embedded_broker import EmbeddedBroker
from sim_hardware.harness.mosquitto import MosquittoBroker


class Broker(Protocol):
    host: str
    port: int

    def start(self) -> Any: ...
    def stop(self) -> None: ...


class ExternalBroker:
    """A broker someone else runs (``--broker HOST:PORT``): never started or stopped here."""

    def __init__(self, address: str) -> None:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"broker address must be HOST:PORT, not {address!r}")
        self.host, self.port = host, int(port)

    def start(self) -> ExternalBroker:
        return self

    def stop(self) -> None:
        pass


def make_broker(kind: str, workdir: Path) -> Broker:
    """``kind`` is "embedded", "mosquitto" (config and log in ``workdir``) or HOST:PORT."""
    if kind == "embedded":
        return EmbeddedBroker()
    if kind == "mosquitto":
        workdir.mkdir(parents=True, exist_ok=True)
        return MosquittoBroker(workdir=workdir)
    return ExternalBroker(kind)
