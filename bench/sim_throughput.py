"""Modbus requests served per second by 100 simulated households, against a bare pymodbus server.

Both sides serve the same buses (one endpoint per household, SDM630 at unit 1 and the battery
inverter at unit 2, the same register layout, the same framing) from a separate server process:

1. bare: pymodbus servers with static registers, no action, no trace hooks (the peer);
2. simulator: `sim_hardware.Simulator`, every answer computed from the household model at the
   request's simulated instant, through the fault gate.

A light client process (raw asyncio sockets, prebuilt frames, one connection per bus, one
request outstanding per connection, as an RS-485 master works) sends the firmware's poll: the
76-register SDM630 block at 0x0000, total energy at 0x0156, and the battery's 40 holding
registers. Figure of merit: simulator requests/s divided by bare requests/s (1.0 = the model
costs nothing). Bare and simulator runs alternate; the table shows the median run of each.

    python3 bench/sim_throughput.py [--meters 100] [--seconds 8] [--rounds 3] [--transport rtu-tcp|tcp]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import struct
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from protocols import modbus  # noqa: E402

# (unit, function, address, count): what the firmware reads every poll.
POLL = [(1, 4, 0x0000, 76), (1, 4, 0x0156, 2), (2, 3, 0x0000, 0x28)]
WARMUP_S = 1.0


# --------------------------------------------------------------------------------- servers


def serve(mode: str, meters: int, transport: str, ports: Any, stop: Any) -> None:
    """Server process: start the buses, report their ports, serve until told to stop."""
    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        asyncio.run(_serve(mode, meters, transport, ports, stop))
    except BaseException as exc:  # tell the parent instead of leaving it waiting
        ports.put(f"{mode} server failed: {exc!r}")
        raise


async def _serve(mode: str, meters: int, transport: str, ports: Any, stop: Any) -> None:
    if mode == "sim":
        from sim_hardware.simulator.server import SimConfig, Simulator

        sim = Simulator(SimConfig(meters=meters, transport=transport, feeder=False))
        await sim.start()
        ports.put([e.port for e in sim.endpoints])
        await asyncio.to_thread(stop.wait)
        await sim.stop()
        return
    servers = await _bare_servers(meters, transport)
    ports.put([port for port, _server in servers])
    await asyncio.to_thread(stop.wait)
    for _port, server in servers:
        await server.shutdown()


async def _bare_servers(meters: int, transport: str) -> list[tuple[int, Any]]:
    from pymodbus.framer import FramerType
    from pymodbus.server import ModbusTcpServer
    from pymodbus.simulator import SimDevice

    from protocols import registers
    from sim_hardware.simulator.devices import register_layout
    from sim_hardware.netutil import free_port

    framer = FramerType.RTU if transport == "rtu-tcp" else FramerType.SOCKET
    out = []
    for _ in range(meters):
        devices = [SimDevice(1, simdata=register_layout(registers.sdm630())),
                   SimDevice(2, simdata=register_layout(registers.battery()))]
        port = free_port()
        server = ModbusTcpServer(devices, framer=framer, address=("127.0.0.1", port))
        await server.serve_forever(background=True)
        out.append((port, server))
    return out


# ---------------------------------------------------------------------------------- client


def frames(transport: str) -> list[tuple[bytes, int]]:
    """(request, response length) for every request of a poll."""
    out = []
    for unit, fc, address, count in POLL:
        rtu = modbus.build_read(unit, fc, address, count)
        length = modbus.expected_response_length(rtu)
        if transport == "tcp":  # MBAP header instead of CRC
            pdu = rtu[1:-2]
            rtu = struct.pack(">HHHB", 1, 0, len(pdu) + 1, unit) + pdu
            length = length - 3 + 7
        out.append((rtu, length))
    return out


async def poller(port: int, transport: str, deadline: float, start: float,
                 latencies: list[float]) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    poll = frames(transport)
    for request, length in poll:  # check once that the answers are real, not exceptions
        writer.write(request)
        answer = await asyncio.wait_for(reader.readexactly(length), 10)
        if transport == "rtu-tcp":
            modbus.parse_response(request, answer)
    done = 0
    try:
        while True:
            for request, length in poll:
                sent = time.perf_counter()
                writer.write(request)
                await reader.readexactly(length)
                now = time.perf_counter()
                if now >= start:
                    done += 1
                    if done % 16 == 0:
                        latencies.append(now - sent)
            if time.perf_counter() >= deadline:
                return done
    finally:
        writer.close()


async def measure(ports: list[int], transport: str, seconds: float) -> dict[str, float]:
    latencies: list[float] = []
    start = time.perf_counter() + WARMUP_S
    deadline = start + seconds
    counts = await asyncio.gather(*(poller(p, transport, deadline, start, latencies)
                                    for p in ports))
    elapsed = max(time.perf_counter(), deadline) - start
    lat = sorted(latencies)
    return {"requests": float(sum(counts)), "rate": sum(counts) / elapsed,
            "p50_ms": 1000 * statistics.median(lat) if lat else float("nan"),
            "p99_ms": 1000 * lat[int(0.99 * (len(lat) - 1))] if lat else float("nan")}


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, float]:
    ctx = mp.get_context("spawn")
    ports_q, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=serve, args=(mode, args.meters, args.transport, ports_q, stop))
    proc.start()
    try:
        ports = ports_q.get(timeout=300)
        if isinstance(ports, str):
            raise RuntimeError(ports)
        return asyncio.run(measure(ports, args.transport, args.seconds))
    finally:
        stop.set()
        proc.join(30)
        if proc.is_alive():
            proc.kill()


# ---------------------------------------------------------------------------------- report


def median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    """The run with the median rate (the machine is shared; one noisy run must not decide)."""
    return sorted(runs, key=lambda r: r["rate"])[len(runs) // 2]


def report(args: argparse.Namespace, bare: dict[str, float], sim: dict[str, float]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Modbus throughput: {args.meters} buses ({args.transport}), "
                        f"{len(POLL)}-request firmware poll, median of {args.rounds} x "
                        f"{args.seconds:g} s")
    table.add_column("server")
    for col in ("requests", "requests/s", "p50 latency ms", "p99 latency ms"):
        table.add_column(col, justify="right")
    for name, r in (("bare pymodbus", bare), ("tmeter simulator", sim)):
        table.add_row(name, f"{r['requests']:.0f}", f"{r['rate']:.0f}", f"{r['p50_ms']:.2f}",
                      f"{r['p99_ms']:.2f}")
    table.add_row("ratio sim/bare", "", f"{sim['rate'] / bare['rate']:.2f}", "", "")
    Console().print(table)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--meters", type=int, default=100, help="households (buses), default 100")
    ap.add_argument("--seconds", type=float, default=8.0, help="measuring time per server")
    ap.add_argument("--transport", choices=("rtu-tcp", "tcp"), default="rtu-tcp")
    ap.add_argument("--rounds", type=int, default=3, help="alternating runs per server")
    args = ap.parse_args()
    runs: dict[str, list[dict[str, float]]] = {"bare": [], "sim": []}
    for _ in range(args.rounds):  # alternate, so drifting background load hits both alike
        for mode in runs:
            runs[mode].append(run_mode(mode, args))
    report(args, median_run(runs["bare"]), median_run(runs["sim"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
