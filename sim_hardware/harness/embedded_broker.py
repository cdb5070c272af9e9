"""The demo's embedded MQTT broker: amqtt in its own process, so a fresh clone needs no
Mosquitto. Same interface as ``MosquittoBroker`` (host, port, start, stop, restart).

Production and the test suite use Mosquitto; amqtt only spares a first-time user an install.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import subprocess
import sys

from sim_hardware.netutil import free_port, stop_process, wait_for_port


class EmbeddedBroker:
    """amqtt listening on 127.0.0.1:port in a child process."""

    def __init__(self, port: int | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> "EmbeddedBroker":
        if self.process is not None and self.process.poll() is None:
            return self
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sim_hardware.harness.embedded_broker", "--port", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(self.host, self.port, timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError("the embedded amqtt broker did not start") from None
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is None:
            return
        stop_process(self.process, timeout)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> "EmbeddedBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def broker_config(port: int) -> dict[str, object]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}", "max_connections": 0}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


async def serve(port: int) -> None:
    from amqtt.broker import Broker

    broker = Broker(broker_config(port))
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await asyncio.wait_for(broker.shutdown(), timeout=5)


def main() -> None:
    parser = argparse.ArgumentParser(description="amqtt broker for the tmeter demo")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
