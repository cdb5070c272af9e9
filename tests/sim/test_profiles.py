"""Household profiles: the public API the market study uses, determinism, exact interval
energies, plausible shapes, and SimBench profiles when the package is installed."""

from __future__ import annotations

import importlib.util
import inspect
import math

import numpy as np
import pytest

from sim_hardware.simulator import profiles
from sim_hardware.simulator.profiles import Profile, household_profile
from tests.sim.conftest import T0

HAVE_SIMBENCH = importlib.util.find_spec("simbench") is not None


def test_public_api_shape() -> None:
    sig = inspect.signature(household_profile)
    assert list(sig.parameters) == ["index", "seed", "source"]
    assert sig.parameters["seed"].default == 0 and sig.parameters["source"].default == "synthetic"
    p = household_profile(0)
    assert isinstance(p, Profile)
    assert isinstance(p.load_w(T0), float) and isinstance(p.pv_w(T0), float)
    energy = p.interval_energy_wh(T0, T0 + 900)
    assert isinstance(energy, tuple) and len(energy) == 2


def test_deterministic_per_seed_and_index() -> None:
    a, b = household_profile(3, seed=5), household_profile(3, seed=5)
    times = [T0 + k * 977.0 for k in range(200)]
    assert [a.load_w(t) for t in times] == [b.load_w(t) for t in times]
    assert [a.pv_w(t) for t in times] == [b.pv_w(t) for t in times]
    other = household_profile(4, seed=5)
    assert [a.load_w(t) for t in times] != [other.load_w(t) for t in times]
    assert [a.load_w(t) for t in times] != [household_profile(3, 6).load_w(t) for t in times]


def numeric_energy(p: Profile, t0: float, t1: float) -> tuple[float, float]:
    load = pv = 0.0
    t = t0
    while t < t1:
        end = min(t1, (math.floor(t / p.step_s) + 1) * p.step_s)
        load += p.load_w(t) * (end - t) / 3600
        pv += p.pv_w(t) * (end - t) / 3600
        t = end
    return load, pv


@pytest.mark.parametrize("source", ["synthetic"] + (["simbench"] if HAVE_SIMBENCH else []))
def test_interval_energy_is_the_exact_integral(source: str) -> None:
    p = household_profile(1, 2, source)
    rng = np.random.default_rng(1)
    for _ in range(20):
        t0 = T0 + float(rng.uniform(-40 * 86400, 40 * 86400))
        t1 = t0 + float(rng.uniform(0, 3 * 86400))
        want = numeric_energy(p, t0, t1)
        got = p.interval_energy_wh(t0, t1)
        assert got == pytest.approx(want, rel=1e-9, abs=1e-6)
    # Additive over adjacent intervals, zero on an empty one.
    a, b, c = T0 + 100.5, T0 + 5000.25, T0 + 90000.75
    ab, bc, ac = (p.interval_energy_wh(a, b), p.interval_energy_wh(b, c),
                  p.interval_energy_wh(a, c))
    assert ab[0] + bc[0] == pytest.approx(ac[0]) and ab[1] + bc[1] == pytest.approx(ac[1])
    assert p.interval_energy_wh(a, a) == (0.0, 0.0)
    with pytest.raises(ValueError):
        p.interval_energy_wh(b, a)


def test_synthetic_shapes_are_plausible() -> None:
    community = [household_profile(i, 0) for i in range(8)]
    year = [p.interval_energy_wh(T0, T0 + 365 * 86400) for p in community]
    for p, (load_wh, pv_wh) in zip(community, year):
        assert 1500e3 < load_wh < 8000e3  # 1.5..8 MWh a year
        if p.kwp:
            assert 600 < pv_wh / 1000 / p.kwp < 1300  # kWh per kWp and year in Germany
        else:
            assert pv_wh == 0
    pv_owners = [p for p in community if p.kwp]
    assert pv_owners
    for p in pv_owners:
        assert p.pv_w(T0 + 1.5 * 3600) == 0.0  # 01:30 local: night
        assert p.pv_w(T0 + 13 * 3600) <= p.kwp * 1000
    # Households share the sky: PV of different houses rises and falls together.
    days = [T0 + d * 86400 for d in range(30)]
    a = [pv_owners[0].interval_energy_wh(t, t + 86400)[1] / pv_owners[0].kwp for t in days]
    b = [pv_owners[1].interval_energy_wh(t, t + 86400)[1] / pv_owners[1].kwp for t in days]
    assert np.corrcoef(a, b)[0, 1] > 0.8
    # Evening consumption beats the small hours.
    p = community[0]
    evening = p.interval_energy_wh(T0 + 18 * 3600, T0 + 21 * 3600)[0]
    night = p.interval_energy_wh(T0 + 2 * 3600, T0 + 5 * 3600)[0]
    assert evening > 1.5 * night


def test_unknown_source() -> None:
    with pytest.raises(ValueError, match="synthetic"):
        household_profile(0, 0, "weather-station")


def test_simbench_missing_gives_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(profiles.importlib.util, "find_spec", lambda name: None)
    profiles.simbench_table.cache_clear()
    try:
        with pytest.raises(profiles.ProfileSourceUnavailable, match=r"tmeter\[simbench\]"):
            household_profile(0, 0, "simbench")
    finally:
        profiles.simbench_table.cache_clear()


@pytest.mark.skipif(not HAVE_SIMBENCH, reason="simbench is not installed (pip install "
                    "'tmeter[simbench]'; CI installs it)")
def test_simbench_households_follow_simbench_profiles() -> None:
    table = profiles.simbench_table()
    p = household_profile(2, 0, "simbench")
    assert p.step_s == 900 and p.load_name.startswith("H0-") and p.pv_name.startswith("PV")
    # 2024-06-15 12:00 CET is slot (166 days * 96 + 48) of the 2016 year.
    t = T0 + 12 * 3600
    slot = profiles._year_slot(t)
    assert slot == 166 * 96 + 48
    load = table[p.load_name]
    scale = p.annual_kwh * 1000.0 / (float(load.mean()) * 8784.0)
    assert p.load_w(t) == pytest.approx(load[slot] * scale)
    assert p.pv_w(t) == pytest.approx(table[p.pv_name][slot] * p.kwp * 1000)
    assert p.load_w(t + 899) == p.load_w(t) and p.pv_w(t + 899) == p.pv_w(t)
    # A household's year equals its annual consumption (the 2016 year repeats).
    start_2016 = 1451602800.0  # 2016-01-01 00:00 CET
    load_wh, _pv = p.interval_energy_wh(start_2016, start_2016 + 366 * 86400)
    assert load_wh == pytest.approx(p.annual_kwh * 1000, rel=1e-9)
