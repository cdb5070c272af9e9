"""A child process of a community run (the gateway, a meter's firmware, a fleet of meters)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sim_hardware.netutil import stop_process


class Process:
    """A child process with its output in a log file; restartable after a kill."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.name, self.cmd, self.env, self.cwd, self.log_path = name, cmd, env, cwd, log_path
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.popen = subprocess.Popen(self.cmd, env=self.env, cwd=self.cwd, stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: a power cut, no chance to clean up."""
        if self.alive:
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is not None:
            stop_process(self.popen, timeout)
