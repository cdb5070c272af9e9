"""Run many meters' firmware in ONE CPython process (one asyncio loop), for load tests and the
bench: the same firmware code, on the same unix hardware layer as the MicroPython port.

    python -m tests.firmware.fleet CONFIG [CONFIG ...]
"""

from __future__ import annotations

import asyncio
import sys

from firmware import main as fw_main
from firmware.app import App
from firmware.hal import Board


async def run_all(paths: list[str]) -> list[App]:
    apps = []
    for path in paths:
        cfg, plans = fw_main.boot(path)
        board = Board(cfg, path.rsplit("/", 1)[0])
        board.quiet = True
        apps.append(App(cfg, board, plans))
    await asyncio.gather(*(a.run() for a in apps))
    return apps


if __name__ == "__main__":
    apps = asyncio.run(run_all(sys.argv[1:]))
    print("fleet done", sum(a.c["records"] for a in apps), "records",
          sum(a.c["acked"] for a in apps), "acked")
