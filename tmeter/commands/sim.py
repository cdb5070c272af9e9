"""`tmeter sim ...`: run simulated households, batteries and the feeder meter.

    tmeter sim run --meters N [--profile synthetic|simbench] [--speed X] [--start UNIX]
                   [--faults FILE] [--manifest FILE] [--transport rtu-tcp|tcp|serial]

Heavy imports (pymodbus, numpy, pandas) happen inside run(), so `tmeter --help` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time
from typing import Any

log = logging.getLogger("tmeter.commands.sim")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="sim_command", metavar="SUBCOMMAND")
    run_p = sub.add_parser(
        "run", help="serve N simulated households (meter unit 1, battery unit 2) and the feeder",
        description="Serve N simulated households, each one Modbus bus endpoint with its meter "
                    "at unit 1 and its battery inverter at unit 2, plus the feeder meter on its "
                    "own endpoint. Prints every device's endpoint; stops on Ctrl-C or SIGTERM.")
    run_p.add_argument("--meters", type=int, default=1, help="number of households (default 1)")
    run_p.add_argument("--profile", choices=("synthetic", "simbench"), default="synthetic",
                       help="household load/PV profiles (simbench needs tmeter[simbench])")
    run_p.add_argument("--seed", type=int, default=0, help="community seed (default 0)")
    run_p.add_argument("--speed", type=float, default=1.0,
                       help="simulated seconds per wall second (default 1)")
    run_p.add_argument("--start", type=float, default=None,
                       help="simulated unix time at --epoch (default: now)")
    run_p.add_argument("--epoch", type=float, default=None,
                       help="wall-clock unix time at which the clock reads --start (default: now);"
                            " give the triple of a running simulation to join its clock")
    run_p.add_argument("--transport", choices=("rtu-tcp", "tcp", "serial"), default="rtu-tcp",
                       help="RTU frames over TCP (default), Modbus TCP, or RTU on serial ports")
    run_p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    run_p.add_argument("--base-port", type=int, default=None,
                       help="TCP ports from here on, one per bus (default: free ports)")
    run_p.add_argument("--serial-ports", default="",
                       help="serial transport: comma-separated ttys, one per household "
                            "(one more serves the feeder; else it uses RTU over TCP)")
    run_p.add_argument("--baud", type=int, default=9600, help="serial baud rate (default 9600)")
    run_p.add_argument("--meter-kind", choices=("sdm630", "sdm120", "mixed"), default="sdm630",
                       help="household meters; mixed makes every third one an SDM120")
    run_p.add_argument("--battery-word-order", choices=("high_first", "low_first"),
                       default="high_first", help="32-bit word order of the battery inverters")
    run_p.add_argument("--no-feeder", action="store_true", help="no feeder meter")
    run_p.add_argument("--faults", default=None,
                       help="TOML or JSON faults file (times in simulated seconds after --start)")
    run_p.add_argument("--manifest", default=None, help="write the endpoints as JSON here")
    run_p.add_argument("--sim-duration", type=float, default=None,
                       help="stop after this many simulated seconds (default: run until stopped)")
    run_p.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.set_defaults(_sim_parser=parser)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "sim_command", None) != "run":
        args._sim_parser.print_help()
        return 2
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # it logs every client's mistakes
    try:
        return asyncio.run(_serve(args))
    except KeyboardInterrupt:
        return 0


def _config(args: argparse.Namespace) -> Any:
    from sim_hardware.simulator.server import SimConfig

    return SimConfig(
        meters=args.meters, seed=args.seed, profile=args.profile, transport=args.transport,
        host=args.host, meter_kind=args.meter_kind, battery_word_order=args.battery_word_order,
        feeder=not args.no_feeder,
        serial_ports=[p for p in args.serial_ports.split(",") if p],
        baudrate=args.baud, base_port=args.base_port)


async def _serve(args: argparse.Namespace) -> int:
    from sim_hardware.simulator.clock import SimClock
    from sim_hardware.simulator.faults import FaultSchedule, load_faults
    from sim_hardware.simulator.profiles import ProfileSourceUnavailable
    from sim_hardware.simulator.server import Simulator

    now = time.time()
    clock = SimClock(args.start if args.start is not None else now,
                     args.epoch if args.epoch is not None else now, args.speed)
    faults = FaultSchedule(clock)
    try:
        if args.faults:
            loaded = load_faults(args.faults, faults, clock.start)
            log.info("faults loaded file=%s count=%d", args.faults, len(loaded))
        sim = Simulator(_config(args), clock, faults)
    except (ProfileSourceUnavailable, ValueError, OSError) as exc:
        print(f"tmeter sim run: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await sim.start()
    except OSError as exc:
        print(f"tmeter sim run: cannot serve: {exc}", file=sys.stderr)
        return 1
    try:
        _announce(sim, args.manifest)
        await _wait(stop, clock, args.sim_duration)
    finally:
        await sim.stop()
        log.info("simulator stopped")
    return 0


def _announce(sim: Any, manifest_path: str | None) -> None:
    """Print every device's endpoint (and write the manifest) once everything listens."""
    manifest = sim.manifest()
    clock = manifest["clock"]
    print(f"clock start={clock['start']:.3f} epoch={clock['epoch']:.3f} speed={clock['speed']:g}")
    for d in manifest["devices"]:
        where = (f"{d['serial_port']} {d['baud']} baud" if d["transport"] == "serial"
                 else f"{d['host']}:{d['port']}")
        print(f"{d['device_id']:<16} {d['kind']:<8} unit {d['unit']:<3} {d['transport']:<8} {where}")
    if manifest_path:
        sim.write_manifest(manifest_path)
        print(f"manifest {manifest_path}")
    print("ready", flush=True)


async def _wait(stop: asyncio.Event, clock: Any, sim_duration: float | None) -> None:
    if sim_duration is None:
        await stop.wait()
        return
    deadline = clock.start + sim_duration
    try:
        await asyncio.wait_for(stop.wait(), timeout=clock.real_seconds(deadline - clock.now()))
    except asyncio.TimeoutError:
        log.info("simulated duration reached")
