"""The gateway of a community run: its config, written as the TOML file a Raspberry Pi would
read, and the daemon started from it as a child process (``tmeter gateway run --config``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import tomli_w

from sim_hardware.harness.brokers import Broker
from sim_hardware.harness.processes import Process
from sim_hardware.harness.provisioning import FEEDER, STATUS_S
from sim_hardware.harness.scenario import Scenario
from sim_hardware.netutil import free_port
from sim_hardware.simulator.clock import SimClock

GRACE_REAL_S = 1.0  # real seconds readings get after an interval ends before it is settled


def gateway_config(scenario: Scenario, db_path: Path, broker: Broker, clock: SimClock) -> dict[str, Any]:
    """The config as ``gateway.config.from_dict`` takes it (keys of gateway/config.py)."""
    sc = scenario
    return {
        "community": sc.community, "db": str(db_path), "interval_s": sc.interval_s,
        "gate_closure_s": sc.gate_closure_s, "synchronous": "NORMAL",
        "mqtt": {"host": broker.host, "port": broker.port, "user": "", "password": "",
                 "client_id": f"tmeter-gateway-{sc.community}", "keepalive_s": 10},
        "market": {"mechanism": sc.mechanism, "import_price": sc.import_price,
                   "export_price": sc.export_price, "allocation": sc.allocation},
        # At high speed a grace of simulated minutes is a fraction of a real second: give
        # the readings at least a real second to arrive before the interval is settled.
        "settlement": {"grace_s": max(sc.grace_s, int(sc.speed * GRACE_REAL_S)), "feeder_meter": FEEDER,
                       "loss_tolerance": sc.loss_tolerance},
        "ledger": {"origin": f"tmeter.demo/{sc.community}"},  # key beside the database
        "status": {"http_host": "127.0.0.1", "http_port": free_port(), "publish_s": STATUS_S},
        "clock": clock.to_dict(),
    }


def write_config(config: dict[str, Any], path: Path) -> None:
    path.write_text(tomli_w.dumps(_without_none(config)))


def _without_none(table: dict[str, Any]) -> dict[str, Any]:
    """TOML has no null: a None leaves its key out, so the gateway takes that key's default."""
    return {k: _without_none(v) if isinstance(v, dict) else v for k, v in table.items() if v is not None}


def start_gateway(config_path: Path, cwd: Path, log_path: Path) -> Process:
    cmd = [sys.executable, "-m", "tmeter", "gateway", "run", "--config", str(config_path)]
    process = Process("gateway", cmd, dict(os.environ), cwd, log_path)
    process.start()
    return process
