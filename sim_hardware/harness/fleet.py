"""Many meters' firmware in ONE CPython process (one asyncio loop): the same firmware code on
the same unix hardware layer as under the MicroPython port, for runs with hundreds of meters.

    python -m sim_hardware.harness.fleet CONFIG [CONFIG ...]

Each meter keeps its own state folder (beside its config) and its log lines are prefixed
with its id, so one log serves the whole fleet.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any


def _prefixed(meter: str) -> Any:
    def log(msg: str) -> None:
        print(meter, msg, flush=False)

    return log


async def run_all(paths: list[str]) -> list[Any]:
    from firmware import main as fw_main
    from firmware.app import App
    from firmware.hal import Board

    apps = []
    for path in paths:
        cfg, readers = fw_main.boot(path)
        board = Board(cfg, path.rsplit("/", 1)[0])
        board.log = _prefixed(cfg["meter"])
        apps.append(App(cfg, board, readers))
    await asyncio.gather(*(a.run() for a in apps))
    return apps


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m sim_hardware.harness.fleet CONFIG [CONFIG ...]", file=sys.stderr)
        return 2
    apps = asyncio.run(run_all(argv))
    print("fleet done", sum(a.c["records"] for a in apps), "records",
          sum(a.c["acked"] for a in apps), "acked")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
