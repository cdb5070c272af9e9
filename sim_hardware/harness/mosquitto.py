"""Run a real Mosquitto broker on a loopback port, for tests, the bench and the demo.

The broker keeps its port across ``stop()``/``start()`` so a client can be tested against a
broker outage and its return.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
import tempfile
from pathlib import Path

from sim_hardware.netutil import free_port, stop_process, wait_for_port


class MosquittoBroker:
    """A Mosquitto process with a config file this object writes."""

    def __init__(
        self,
        port: int | None = None,
        workdir: Path | None = None,
        extra_config: str = "",
        allow_anonymous: bool = True,
        binary: str | None = None,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="tmeter-mosquitto-"))
        self.extra_config = extra_config
        self.allow_anonymous = allow_anonymous
        self.binary = binary or find_mosquitto()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    def write_config(self) -> Path:
        lines = [
            # Started as root (CI), Mosquitto would drop to the "mosquitto" user and could not
            # read its log, certificates or password files in our private temp folders.
            f"user {getpass.getuser()}",
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'true' if self.allow_anonymous else 'false'}",
            "persistence false",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",
            self.extra_config,
        ]
        self.config_path.write_text("\n".join(lines) + "\n")
        return self.config_path

    def start(self, timeout: float = 10.0) -> "MosquittoBroker":
        if self.process is not None and self.process.poll() is None:
            return self
        self.write_config()
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.config_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(self.host, self.port, timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log_text()}") from None
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self.process is None:
            return
        stop_process(self.process, timeout)
        if self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> "MosquittoBroker":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def find_mosquitto() -> str:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if candidate and Path(candidate).exists():
            return candidate
    raise FileNotFoundError("mosquitto not found: apt-get install mosquitto")
