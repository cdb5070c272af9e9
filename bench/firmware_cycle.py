"""Meter firmware cycle: time per Modbus poll and per signed record, and peak heap, under the
MicroPython unix port beside the same steps under CPython, as ratios.

The same script body runs in both interpreters (firmware code unmodified, the unix hal):
  poll    one meter read through the RTU master (block read over RTU-over-TCP to a simulated
          SDM630 from sim_hardware), converted to integer Wh
  record  interval close + HMAC-signed reading + atomic write to the on-flash queue + ack
  heap    live memory, application and its imports included (MicroPython: gc.mem_alloc()
          after a collection at the end of each phase; CPython: tracemalloc's peak)
Run:  python bench/firmware_cycle.py [--polls N] [--records N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Runs under MicroPython and CPython alike.
STEPS = r"""
import asyncio, gc, sys, time
from firmware import main as fw_main
from firmware.app import App
from firmware.hal import Board
cfg, readers = fw_main.boot(CONFIG)
board = Board(cfg, STATE)
board.quiet = True
app = App(cfg, board, readers)
app.restore()
PEAK = [0]
def sample():
    # Live memory: MicroPython after a collection (its heap fills with garbage between them),
    # CPython tracemalloc's own peak of traced allocations.
    if hasattr(gc, "mem_alloc"):
        gc.collect()
        u = gc.mem_alloc()
    else:
        u = tracemalloc.get_traced_memory()[1]
    if u > PEAK[0]:
        PEAK[0] = u
def now_us():
    return time.ticks_us() if hasattr(time, "ticks_us") else time.perf_counter_ns() // 1000
async def bench():
    await app.poll()
    t = now_us()
    for _ in range(POLLS):
        ok = await app.poll()
    poll_us = (now_us() - t) / POLLS
    sample()
    t = now_us()
    for i in range(RECORDS):
        rec = app.acct.close(app.acct.iv + 1, board.now_ms())
        msg = app.emit(rec)
        app.outbox.ack(msg["seq"], msg["boot"])
    rec_us = (now_us() - t) / RECORDS
    sample()
    return poll_us, rec_us
poll_us, rec_us = asyncio.run(bench())
print("RESULT", int(poll_us), int(rec_us), PEAK[0], app.c["mb_err"])
"""


def run(runtime: str, config: Path, polls: int, records: int) -> tuple[int, int, int]:
    from tmeter.fwtools.runner import find_micropython, micropython_env

    code = (STEPS.replace("CONFIG", repr(str(config))).replace("STATE", repr(str(config.parent)))
            .replace("POLLS", str(polls)).replace("RECORDS", str(records)))
    script = config.parent / f"bench_{runtime}.py"
    env = micropython_env()
    if runtime == "micropython":
        script.write_text(code)
        cmd = [find_micropython(), "-X", "heapsize=512K", str(script)]
    else:
        # CPython has no GC heap figure: traced Python allocations stand in for it.
        script.write_text("import tracemalloc\ntracemalloc.start()\n" + code)
        cmd = [sys.executable, str(script)]
        env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(cmd, env=env, cwd=config.parent, capture_output=True, text=True,
                         timeout=600)
    for line in out.stdout.splitlines():
        if line.startswith("RESULT"):
            _r, poll_us, rec_us, peak, errors = line.split()
            if int(errors):
                raise RuntimeError(f"{runtime}: {errors} Modbus errors during the bench")
            return int(poll_us), int(rec_us), int(peak)
    raise RuntimeError(f"{runtime} failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def main() -> int:
    from rich.console import Console
    from rich.table import Table

    from tests.firmware import harness

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--polls", type=int, default=200)
    ap.add_argument("--records", type=int, default=200)
    args = ap.parse_args()
    clock = harness.sim_clock(1)
    thread, sim = harness.start_sim(1, clock)
    try:
        results = {}
        for runtime in ("micropython", "cpython"):
            with tempfile.TemporaryDirectory(prefix="fwbench-") as d:
                cfg = harness.write_config(Path(d) / "m01", "m01", 1, harness.device_link(sim, 0),
                                           clock)
                results[runtime] = run(runtime, cfg, args.polls, args.records)
    finally:
        thread.stop()
    mp, cp = results["micropython"], results["cpython"]
    table = Table(title="firmware cycle: MicroPython unix port vs CPython (same code, unix hal)")
    table.add_column("step")
    table.add_column("MicroPython", justify="right")
    table.add_column("CPython", justify="right")
    table.add_column("ratio MP/CPy", justify="right")
    rows = (("Modbus poll (us)", 0), ("signed record (us)", 1), ("peak heap (bytes)", 2))
    for label, i in rows:
        table.add_row(label, f"{mp[i]:,}", f"{cp[i]:,}", f"{mp[i] / cp[i]:.2f}" if cp[i] else "-")
    Console().print(table)
    print(json.dumps({"micropython": mp, "cpython": cp}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
