"""Fixtures for the firmware tests: simulated households on an accelerated clock, the fake
gateway on the test's broker, and the mpy-cross build of the firmware."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sim_hardware.harness.mosquitto import MosquittoBroker
from tests.firmware import harness
from tests.firmware.fakegw import FakeGateway

SPEED = 60  # one simulated minute (= one interval) per wall second


@pytest.fixture
def clock():
    return harness.sim_clock(SPEED)


@pytest.fixture
def sim(clock):
    thread, sim = harness.start_sim(1, clock)
    yield sim
    thread.stop()


@pytest.fixture
def gateway(mosquitto: MosquittoBroker) -> Iterator[FakeGateway]:
    keys = {f"m{i:02d}": harness.meter_key(f"m{i:02d}") for i in range(100)}
    gw = FakeGateway(mosquitto.host, mosquitto.port, "c1", keys)
    yield gw
    gw.close()


@pytest.fixture(scope="session")
def fw_build(tmp_path_factory) -> Path:
    """`tmeter fw build` output (xtensawin .mpy and unix bytecode .mpy)."""
    from tmeter.commands import fw
    out = tmp_path_factory.mktemp("fwbuild")
    fw.build(out)
    return out


@pytest.fixture
def meters() -> Iterator[list]:
    started: list = []
    yield started
    for m in started:
        m.stop()
