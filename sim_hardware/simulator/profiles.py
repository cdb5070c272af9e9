"""Household load and PV profiles: deterministic synthetic ones, or SimBench's 15-minute profiles.

Public API (the market study depends on it, keep it stable)::

    household_profile(index, seed=0, source="synthetic") -> Profile
    Profile.load_w(t), Profile.pv_w(t)          # W at unix time t
    Profile.interval_energy_wh(t0, t1)          # exact (load_wh, pv_wh) over [t0, t1)

Profiles are piecewise constant on a fixed grid (60 s synthetic, 900 s SimBench, aligned to unix
time), so energy over any interval is an exact sum, and the simulator's meters, which integrate
the same steps, agree with it to rounding.
"""

from __future__ import annotations

import importlib.util
import math
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

DAY_S = 86400
UTC_OFFSET_S = 3600  # households live on Central European (standard) time, like SimBench
LATITUDE_DEG = 50.0  # central Germany: SimBench's grids are German
LONGITUDE_DEG = 10.0
SOURCES = ("synthetic", "simbench")


class ProfileSourceUnavailable(RuntimeError):
    """The requested profile source cannot be used here (e.g. simbench is not installed)."""


class Profile:
    """Load and PV power of one household, piecewise constant on ``step_s`` steps.

    Subclasses fill one UTC day at a time (``_day_values``); this class caches days and turns
    them into exact energies.
    """

    step_s: int = 60
    source: str = ""

    def __init__(self, index: int, seed: int, annual_kwh: float, kwp: float,
                 phase_shares: tuple[float, float, float]) -> None:
        self.index = index
        self.seed = seed
        self.annual_kwh = annual_kwh
        self.kwp = kwp
        self.phase_shares = phase_shares
        self._days: OrderedDict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = (
            OrderedDict())

    # ------------------------------------------------------------------------ public API
    def load_w(self, t: float) -> float:
        """Household consumption in W at unix time ``t`` (constant within a step)."""
        load, _pv, _cl, _cp = self._day(math.floor(t / DAY_S))
        return float(load[self._slot(t)])

    def pv_w(self, t: float) -> float:
        """PV production in W at unix time ``t`` (constant within a step)."""
        _load, pv, _cl, _cp = self._day(math.floor(t / DAY_S))
        return float(pv[self._slot(t)])

    def interval_energy_wh(self, t0: float, t1: float) -> tuple[float, float]:
        """Exact (load_wh, pv_wh) over [t0, t1)."""
        if t1 < t0:
            raise ValueError(f"interval ends before it starts: {t0} > {t1}")
        load_wh = pv_wh = 0.0
        t = t0
        while t < t1:
            day = math.floor(t / DAY_S)
            end = min(t1, (day + 1) * DAY_S)
            a, b = self._day_energy(day, t - day * DAY_S), self._day_energy(day, end - day * DAY_S)
            load_wh += b[0] - a[0]
            pv_wh += b[1] - a[1]
            t = end
        return load_wh, pv_wh

    # ------------------------------------------------------------------ simulator helpers
    def next_change(self, t: float) -> float:
        """The next step boundary after ``t``: where load or PV may change."""
        return (math.floor(t / self.step_s) + 1) * self.step_s

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "index": self.index, "seed": self.seed,
                "annual_kwh": round(self.annual_kwh, 1), "kwp": round(self.kwp, 2),
                "step_s": self.step_s}

    # ------------------------------------------------------------------------ internals
    def _slot(self, t: float) -> int:
        return int((t - math.floor(t / DAY_S) * DAY_S) // self.step_s)

    def _day(self, day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        cached = self._days.get(day)
        if cached is not None:
            self._days.move_to_end(day)
            return cached
        load, pv = self._day_values(day)
        hours = self.step_s / 3600.0
        cum_load = np.concatenate(([0.0], np.cumsum(load * hours)))
        cum_pv = np.concatenate(([0.0], np.cumsum(pv * hours)))
        entry = (load, pv, cum_load, cum_pv)
        self._days[day] = entry
        if len(self._days) > 8:  # a sweep walks forward; a few days cover every access pattern
            self._days.popitem(last=False)
        return entry

    def _day_energy(self, day: int, offset: float) -> tuple[float, float]:
        """Energy from the start of ``day`` to ``offset`` seconds into it."""
        load, pv, cum_load, cum_pv = self._day(day)
        k = int(offset // self.step_s)
        if k >= len(load):
            return float(cum_load[-1]), float(cum_pv[-1])
        part = (offset - k * self.step_s) / 3600.0
        return (float(cum_load[k] + load[k] * part), float(cum_pv[k] + pv[k] * part))

    def _day_values(self, day: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


def household_profile(index: int, seed: int = 0, source: str = "synthetic") -> Profile:
    """The profile of household ``index`` in the community ``seed``; same arguments, same profile."""
    if source == "synthetic":
        return SyntheticProfile(index, seed)
    if source == "simbench":
        return SimbenchProfile(index, seed)
    raise ValueError(f"unknown profile source {source!r}; use one of {', '.join(SOURCES)}")


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([abs(int(k)) for k in key]))


def _phase_shares(index: int) -> tuple[float, float, float]:
    # Households are wired unevenly across phases; rotate so a community is roughly balanced.
    shares = ((0.5, 0.3, 0.2), (0.2, 0.5, 0.3), (0.3, 0.2, 0.5))
    return shares[index % 3]


# -------------------------------------------------------------------------------- synthetic


class SyntheticProfile(Profile):
    """Daily load shapes (morning and evening peaks, weekday/weekend, season, appliance events,
    minute-scale noise) and clear-sky PV times a community-wide cloud process, per minute."""

    step_s = 60
    source = "synthetic"

    def __init__(self, index: int, seed: int = 0) -> None:
        rng = _rng(seed, index, 0xA11)
        has_pv = rng.random() < 0.75
        super().__init__(index, seed, float(rng.uniform(2200, 5500)),
                         float(rng.uniform(3.0, 10.0)) if has_pv else 0.0, _phase_shares(index))
        self.morning_h = float(rng.normal(7.0, 0.5))
        self.evening_h = float(rng.normal(19.0, 0.7))
        self.daytime_presence = float(rng.uniform(0.2, 0.9))
        self.events_per_day = float(rng.uniform(3.0, 8.0))
        self.pv_shift_h = float(rng.uniform(-1.0, 1.0))  # east/west orientation moves the peak

    def _day_values(self, day: int) -> tuple[np.ndarray, np.ndarray]:
        n = DAY_S // self.step_s
        utc_h = np.arange(n) * (self.step_s / 3600.0)
        return self._load(day, utc_h), self._pv(day, utc_h)

    def _load(self, day: int, utc_h: np.ndarray) -> np.ndarray:
        local_h = (utc_h + UTC_OFFSET_S / 3600.0) % 24.0
        weekday = (day + 3) % 7  # 1970-01-01 was a Thursday; 5, 6 = weekend
        weekend = weekday >= 5
        shape = 0.3 + 1.2 * _bump(local_h, self.morning_h + (1.5 if weekend else 0.0), 0.9)
        shape += (1.0 if weekend else 0.5) * self.daytime_presence * _bump(local_h, 12.5, 1.5)
        shape += 1.8 * _bump(local_h, self.evening_h, 1.6)
        doy = (day + 0.5) % 365.25
        mean_w = self.annual_kwh * 1000.0 / 8766.0 * (1.0 + 0.2 * math.cos(2 * math.pi * (doy - 15) / 365.25))
        rng = _rng(self.seed, self.index, day, 1)
        load = shape * (0.85 * mean_w / shape.mean())
        load *= np.exp(_ar1(rng, len(load), 0.9, 0.08))
        load += self._events(rng, shape, mean_w)
        return np.maximum(load, 60.0)  # standby consumption never stops

    def _events(self, rng: np.random.Generator, shape: np.ndarray, mean_w: float) -> np.ndarray:
        """Appliances (kettle, oven, washing machine): blocks of 0.8..2.5 kW for 3..40 minutes,
        starting more often when the household is active."""
        n = len(shape)
        out = np.zeros(n)
        count = rng.poisson(self.events_per_day)
        starts = rng.choice(n, size=count, p=shape / shape.sum())
        for start in starts:
            steps = int(rng.uniform(3, 40) * 60 / self.step_s) + 1
            out[start:start + steps] += rng.uniform(800.0, 2500.0) * min(1.0, mean_w / 400.0)
        return out

    def _pv(self, day: int, utc_h: np.ndarray) -> np.ndarray:
        if self.kwp <= 0:
            return np.zeros(len(utc_h))
        doy = day % 365.25
        decl = math.radians(23.45) * math.sin(2 * math.pi * (284 + doy) / 365.25)
        lat = math.radians(LATITUDE_DEG)
        solar_h = utc_h + LONGITUDE_DEG / 15.0
        sun_up = _sin_elevation(lat, decl, solar_h) > 0
        facing = np.clip(_sin_elevation(lat, decl, solar_h - self.pv_shift_h), 0.0, None)
        clear = self.kwp * 1000.0 * 0.82 * facing ** 1.25 * sun_up
        return clear * _clear_sky_index(self.seed, day, len(utc_h))


def _bump(hours: np.ndarray, centre: float, width: float) -> np.ndarray:
    """A Gaussian bump over the hour of day, wrapping at midnight."""
    d = np.abs(hours - centre) % 24.0
    d = np.minimum(d, 24.0 - d)
    return np.exp(-0.5 * (d / width) ** 2)


def _sin_elevation(lat: float, decl: float, solar_h: np.ndarray) -> np.ndarray:
    hour_angle = np.radians(15.0 * (solar_h - 12.0))
    return math.sin(lat) * math.sin(decl) + math.cos(lat) * math.cos(decl) * np.cos(hour_angle)


def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    eps = rng.normal(0.0, sigma * math.sqrt(1 - phi * phi), n)
    out = np.empty(n)
    x = rng.normal(0.0, sigma)
    for i in range(n):  # n = 1440 at most; a Python loop keeps the recursion obvious
        x = phi * x + eps[i]
        out[i] = x
    return out


@lru_cache(maxsize=64)
def _clear_sky_index(seed: int, day: int, n: int) -> np.ndarray:
    """Cloudiness seen by the whole community (households share the sky): a daily clearness from
    a Beta distribution plus a slowly varying intra-day cloud process, clipped to [0.05, 1]."""
    rng = _rng(seed, day, 2)
    daily = float(rng.beta(2.2, 1.4))
    clouds = _ar1(rng, n, 0.98, 0.35 * (1.0 - daily) + 0.03)
    index = np.clip(daily + clouds, 0.05, 1.0)
    index.setflags(write=False)
    return index


# --------------------------------------------------------------------------------- SimBench

SIMBENCH_DATASET = "1-complete_data-mixed-all-0-sw"
SIMBENCH_LOADS = ("H0-A", "H0-B", "H0-C", "H0-G", "H0-H", "H0-L")
SIMBENCH_PV = tuple(f"PV{i}" for i in range(1, 9))
SIMBENCH_YEAR_STEPS = 35136  # the 2016 profiles: 366 days of 15 minutes


class SimbenchProfile(Profile):
    """A SimBench household: one H0-* standard load profile scaled to the household's annual
    consumption, one PV* profile (per unit of rated power) times its kWp. 15-minute steps on
    local (CET) time of year, repeated every year."""

    step_s = 900
    source = "simbench"

    def __init__(self, index: int, seed: int = 0) -> None:
        table = simbench_table()
        rng = _rng(seed, index, 0x5B)
        self.load_name = SIMBENCH_LOADS[int(rng.integers(len(SIMBENCH_LOADS)))]
        self.pv_name = SIMBENCH_PV[int(rng.integers(len(SIMBENCH_PV)))]
        super().__init__(index, seed, float(rng.uniform(2200, 5500)),
                         float(rng.uniform(3.0, 10.0)), _phase_shares(index))
        load = table[self.load_name]
        self._load_w = load * (self.annual_kwh * 1000.0 / (float(load.mean()) * 8784.0))
        self._pv_w = table[self.pv_name] * (self.kwp * 1000.0)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "load_profile": self.load_name, "pv_profile": self.pv_name}

    def _day_values(self, day: int) -> tuple[np.ndarray, np.ndarray]:
        n = DAY_S // self.step_s
        idx = np.array([_year_slot(day * DAY_S + k * self.step_s) for k in range(n)])
        return self._load_w[idx], self._pv_w[idx]


def _year_slot(t: float) -> int:
    """The 15-minute slot of the (2016) SimBench year for unix time ``t`` in CET."""
    import time as _time

    local = t + UTC_OFFSET_S
    year = _time.gmtime(local).tm_year
    year_start = _calendar_timegm(year)
    return int((local - year_start) // 900) % SIMBENCH_YEAR_STEPS


@lru_cache(maxsize=None)
def _calendar_timegm(year: int) -> int:
    import calendar

    return calendar.timegm((year, 1, 1, 0, 0, 0, 0, 0, 0))


def simbench_dir() -> Path:
    """The SimBench CSV folder of the installed ``simbench`` package, found without importing it
    (importing it pulls in pandapower, seconds of start-up for one table)."""
    spec = importlib.util.find_spec("simbench")
    if spec is None or not spec.submodule_search_locations:
        raise ProfileSourceUnavailable(
            "profile source 'simbench' needs the simbench package: pip install 'tmeter[simbench]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "networks" / SIMBENCH_DATASET
    if not (path / "LoadProfile.csv").exists():
        raise ProfileSourceUnavailable(f"simbench is installed but {path} has no LoadProfile.csv")
    return path


@lru_cache(maxsize=1)
def simbench_table() -> dict[str, np.ndarray]:
    """The household (H0-*) active-power and PV profiles, per unit, as arrays of 35136 values."""
    try:
        import pandas as pd
    except ImportError as exc:  # pandas comes with simbench
        raise ProfileSourceUnavailable("profile source 'simbench' needs pandas") from exc
    path = simbench_dir()
    loads = pd.read_csv(path / "LoadProfile.csv", sep=";",
                        usecols=[f"{name}_pload" for name in SIMBENCH_LOADS])
    pv = pd.read_csv(path / "RESProfile.csv", sep=";", usecols=list(SIMBENCH_PV))
    table = {name: loads[f"{name}_pload"].to_numpy(dtype=float) for name in SIMBENCH_LOADS}
    table.update({name: pv[name].to_numpy(dtype=float) for name in SIMBENCH_PV})
    for name, values in table.items():
        if len(values) != SIMBENCH_YEAR_STEPS:
            raise ProfileSourceUnavailable(f"SimBench profile {name} has {len(values)} steps")
        values.setflags(write=False)
    return table
