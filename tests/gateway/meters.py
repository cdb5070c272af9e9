"""Simulated meters for gateway tests: they live in sim_hardware/harness/forged_meter.py, where
the red-team bench (bench/redteam.py) uses them too; re-exported here for the suite."""

from sim_hardware.harness.forged_meter import (  # noqa: F401
    AckCollector, Fleet, MeterLink, MeterSpec, bid, intrude, publisher, reading)
