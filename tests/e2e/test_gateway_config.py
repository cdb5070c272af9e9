"""The gateway config a community run writes (sim_hardware/harness/gateway_process.py) loads
back through the gateway's own reader as exactly the config meant."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.config import ClockConfig, ConfigError, GatewayConfig, MarketConfig, from_dict, load
from sim_hardware.harness.brokers import ExternalBroker
from sim_hardware.harness.gateway_process import gateway_config, write_config
from sim_hardware.harness.scenario import Scenario
from sim_hardware.simulator.clock import SimClock


def test_a_runs_gateway_config_loads_back_as_meant(tmp_path: Path) -> None:
    scenario = Scenario(speed=720.0, mechanism="p2p", loss_tolerance=0.02)
    clock = SimClock(scenario.start, time.time() + 3.0, scenario.speed)  # an epoch with a fraction
    config = gateway_config(scenario, tmp_path / "gateway.db", ExternalBroker("127.0.0.1:1883"), clock)
    write_config(config, tmp_path / "gateway.toml")
    assert load(tmp_path / "gateway.toml") == from_dict(config)


def test_none_in_a_table_leaves_the_key_to_its_default(tmp_path: Path) -> None:
    meant = {"community": "c1", "db": str(tmp_path / "gateway.db"), "market": {"mechanism": "p2p"}}
    written = {**meant, "market": {"mechanism": "p2p", "capacity_wh": None}}
    write_config(written, tmp_path / "gateway.toml")
    assert "capacity_wh" not in (tmp_path / "gateway.toml").read_text()
    assert load(tmp_path / "gateway.toml") == from_dict(meant)


def test_a_config_built_in_code_round_trips_through_its_file(tmp_path: Path) -> None:
    # model_dump() is what asdict() was: the harness writes it, the gateway reads back the same.
    cfg = GatewayConfig(community="c7", db=str(tmp_path / "g.db"), interval_s=60, gate_closure_s=5,
                        market=MarketConfig(mechanism="p2p", allocation="equal", capacity_wh=9000),
                        clock=ClockConfig(start=1.5e9, epoch=time.time(), speed=60.0))
    cfg.settlement.feeder_meter = "feeder"
    write_config(cfg.model_dump(), tmp_path / "gateway.toml")
    assert load(tmp_path / "gateway.toml") == cfg


def test_a_mistake_in_a_runs_config_is_refused_by_the_gateway_reading_it(tmp_path: Path) -> None:
    scenario = Scenario(allocation="prop")  # type: ignore[arg-type]
    config = gateway_config(scenario, tmp_path / "gateway.db", ExternalBroker("127.0.0.1:1883"),
                            SimClock(scenario.start, time.time(), scenario.speed))
    write_config(config, tmp_path / "gateway.toml")
    with pytest.raises(ConfigError, match=r'gateway.toml: market.allocation: expected one of .*, got "prop"$'):
        load(tmp_path / "gateway.toml")
