"""Memory: the whole application (the `fw build` bytecode, as deployed on a board) runs 2,000
accelerated intervals (500 for the 32-bit .mpy layout in CI, see INTERVALS) without
MemoryError, and the free heap after gc.collect() does not trend down; once booted it holds
only the device's side of protocols/. On the 64-bit unix port (128 KB heap) and on the vendored
32-bit one (tools/micropython-i386/), whose objects have the ESP32 port's sizes, so its heap is
a board's (issue 13's budget: 64 KB). The 32-bit port runs the build twice: as .mpy files
(today's deployment: each module's bytecode is loaded into the heap) and from a ROMFS image
(MicroPython >= 1.25, vfs.VfsRom: bytecode runs in place from flash)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tmeter.fwtools.runner import find_micropython, micropython_env
from tests.firmware import harness

# The long run's length per layout. ROMFS, the layout of the 64 KB budget, runs the 2,000
# intervals of issue 13 in CI (40 s; a leak of 1 byte an interval fails its slope check). The
# .mpy layout runs the same code with its bytecode loaded once at boot, so what it adds is its
# peak (84 KB fails at the MQTT connect, before interval 1): CI runs 500 intervals, 10 s instead
# of 40 (a leak of 6 bytes an interval still fails here); TMETER_FW_INTERVALS_MPY=2000 runs it
# at full length.
INTERVALS = {"32bit": int(os.environ.get("TMETER_FW_INTERVALS_MPY", "500")), "32bit-romfs": 2000}
BUDGET32 = 64 * 1024  # issue 13: a booted meter with every feature in a 64 KB ESP32 heap
# The heap of each layout. 64-bit: docs/architecture.md §6. 32-bit with .mpy files: the budget
# is out of reach while the code sits in the heap (measured 2026-12-03: 84 KB raises
# MemoryError at the MQTT connect, 88 KB runs 2,000 intervals with 14 KB free): the smallest
# passing heap plus one 4 KB step, and the test prints how far it is from the budget. 32-bit
# from ROMFS: the budget itself; on the unix port the image is read into the heap (a board maps
# it from flash), so the heap is the budget plus the image.
HEAPS = {"64bit": os.environ.get("TMETER_FW_HEAP", "128K"),
         "32bit": os.environ.get("TMETER_FW_HEAP32", "92K"),
         "32bit-romfs": os.environ.get("TMETER_FW_HEAP32_ROMFS", "64K")}


@dataclass
class Layout:
    name: str
    bits: int
    heap: int           # bytes the firmware may use (-X heapsize less the ROMFS image)
    image: int          # bytes of the ROMFS image in the unix port's heap (0: .mpy files)
    path: Path          # MICROPYPATH entry holding the firmware and protocols packages

    @property
    def heapsize(self) -> str:
        return "%dK" % ((self.heap + self.image + 1023) // 1024)


def _kib(size: str) -> int:
    return int(size.rstrip("Kk")) * 1024


def build_romfs(unix_build: Path, out: Path) -> tuple[Path, int]:
    """A ROMFS image of the unix bytecode build (`mpremote romfs build`) and a package shim that
    mounts it at /rom and points the ``firmware`` package there (MicroPython finds a package's
    submodules through its __path__), so `-m firmware.main` runs the image's code in place."""
    out.mkdir(parents=True, exist_ok=True)
    image = out / "fw.romfs"
    mpremote = Path(sys.executable).parent / "mpremote"
    subprocess.run([str(mpremote), "romfs", "--no-mpy", "-o", str(image), "build", str(unix_build)],
                   check=True, capture_output=True, timeout=120)
    shim = out / "shim" / "firmware"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "__init__.py").write_text(
        "import sys, vfs\n"
        "f = open(%r, 'rb')\n"
        "vfs.mount(vfs.VfsRom(f.read()), '/rom')\n"
        "f.close()\n"
        "sys.path.append('/rom')\n"
        "__path__ = '/rom/firmware'\n" % str(image))
    return shim.parent, image.stat().st_size


@pytest.fixture(scope="module")
def romfs(fw_build, tmp_path_factory) -> tuple[Path, int]:
    return build_romfs(fw_build / "unix", tmp_path_factory.mktemp("romfs"))


@pytest.fixture(params=tuple(HEAPS))
def layout(request, fw_build, monkeypatch) -> Layout:
    """The port and firmware layout of this run; the meters the test starts use it too
    (harness.Meter finds the interpreter through find_micropython: TMETER_MICROPYTHON_BITS)."""
    name = request.param
    bits = 64 if name == "64bit" else 32
    monkeypatch.setenv("TMETER_MICROPYTHON_BITS", str(bits))
    if name.endswith("romfs"):
        shim, size = request.getfixturevalue("romfs")
        return Layout(name, bits, _kib(HEAPS[name]), size, shim)
    return Layout(name, bits, _kib(HEAPS[name]), 0, fw_build / "unix")


POOL_STEP = 621  # the name that makes MicroPython allocate the pool's sixth step (640 names)
# What the firmware imports, dependencies first, so each figure is the module's own heap cost
# (code, names and module data; the interpreter's name pool grows in steps, which lands on
# whichever module crosses a step). protocols.simclock is the unix port's (firmware/hal_unix.py):
# a board's clock is NTP time.
RUNTIME_MODULES = (
    "asyncio", "protocols.errors", "protocols.topics", "protocols.canonical", "protocols.auth",
    "protocols.trailer", "protocols.meterlink", "protocols.rtu", "protocols.regcore",
    "firmware.files", "protocols.simclock", "firmware.hal_unix", "firmware.hal",
    "firmware.modbus_master", "firmware.devices", "firmware.accounting", "firmware.outbox",
    "firmware.state", "firmware.watchdog", "firmware.bidding", "firmware.awards", "firmware.mqtt",
    "firmware.app", "firmware.main")
# Host-side or boot-only: never loaded (or unloaded again) on a running board.
NOT_ON_DEVICE = ("protocols.messages", "protocols.modbus", "protocols.registers", "protocols.accel",
                 "protocols.devconfig", "firmware.config", "firmware.regmap",
                 # only while a command or an update is taken (firmware/ondemand.py), or
                 # never (the tool's side)
                 "firmware.remote", "protocols.remote", "firmware.ota", "protocols.ota",
                 "firmware.otaimage", "firmware.romfile", "protocols.downlink",
                 "firmware.ondemand", "protocols.otahost")


def print_costs(costs: list[list], used: int, heap: int) -> None:
    """The modules' heap costs, dearest first, with their share of the booted meter's heap."""
    total = sum(c for _n, c in costs)
    print(f"heap cost of each module (bytes), dearest first; all modules {total}:")
    for name, cost in sorted(costs, key=lambda nc: -nc[1]):
        print(f"  {name:24} {cost:6} {100 * cost / used:5.1f} %")
    print(f"heap in use after boot, code and configuration: {used} of {heap}")


@pytest.mark.micropython
def test_a_booted_meter_holds_only_the_device_side(tmp_path, layout):
    cfg = harness.write_config(tmp_path / "m01", "m01", 1883, "tcp:127.0.0.1:5020",
                               harness.sim_clock(1))
    code = (
        "import gc, json, sys\n"
        "import firmware\n"  # first: from ROMFS, its shim mounts the image
        "gc.collect()\n"
        "base = gc.mem_alloc()\n"
        "costs = []\n"
        "for name in %r:\n"
        "    before = gc.mem_alloc()\n"
        "    __import__(name)\n"
        "    gc.collect()\n"
        "    costs.append((name, gc.mem_alloc() - before))\n"
        "from firmware import main\n"
        "cfg, plans = main.boot(%r)\n"
        "gc.collect()\n"
        "import micropython\n"
        "micropython.qstr_info()\n"
        "print(json.dumps({'costs': costs, 'used': gc.mem_alloc() - base, 'free': gc.mem_free(),\n"
        "                  'modules': sorted(sys.modules)}))\n"
    ) % (RUNTIME_MODULES, str(cfg))
    script = tmp_path / "boot.py"
    script.write_text(code)
    env = micropython_env()
    env["MICROPYPATH"] = ".frozen:" + str(layout.path)
    cmd = [find_micropython(), "-X", "heapsize=" + layout.heapsize, str(script)]
    out = subprocess.run(cmd, env=env,
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{layout.name}:")
    print_costs(got["costs"], got["used"], layout.heap)
    print("free heap after boot:", got["free"])
    if layout.bits == 32:
        print(f"ESP32 budget {BUDGET32}: {BUDGET32 - got['used']} bytes left for the running"
              " meter's objects (App, buffers, queue)")
    # The interpreter's name pool grows in steps; the sixth (640 names, 7 KB on the unix port)
    # comes with the 621st name. The firmware stays below it: a step here is a step in free heap.
    pool = out.stdout.strip().splitlines()[-2]
    print(pool)
    names = int(re.search(r"n_qstr=(\d+)", pool).group(1))
    assert names < POOL_STEP, f"{names} names: the pool's next step costs the meter 7 KB of heap"
    assert not set(NOT_ON_DEVICE) & set(got["modules"]), got["modules"]


@pytest.mark.micropython
@pytest.mark.mosquitto
def test_2000_intervals_in_small_heap(tmp_path, mosquitto, gateway, meters, layout):
    if layout.bits == 64:
        # The 32-bit layouts measure a board's object sizes; the 64-bit port's long run adds
        # 40 s to the suite and nothing they do not show (its boot test still runs).
        pytest.skip("the long run is the 32-bit ports' (ESP32 object sizes)")
    intervals = INTERVALS[layout.name]
    clock = harness.sim_clock(3000)  # a 60 s interval every 20 ms
    thread, sim = harness.start_sim(1, clock)
    try:
        cfg = harness.write_config(tmp_path / "m01", "m01", mosquitto.port,
                                   harness.device_link(sim, 0), clock, poll_s=30,
                                   max_intervals=intervals, heap_log=100, ack_timeout_s=2,
                                   status_s=5, send_window=2)
        meter = harness.Meter(cfg, heapsize=layout.heapsize, build=layout.path).start()
        meters.append(meter)
        rc = meter.wait(240)
    finally:
        thread.stop()
    out = meter.output()
    assert "MemoryError" not in out and rc == 0, out[-3000:]
    series = [(int(n), int(free)) for n, free in re.findall(r"HEAP (\d+) (\d+)", out)]
    in_use = _kib(layout.heapsize) - layout.image - min(f for _n, f in series)
    print(f"{layout.name}: a running meter holds {in_use} bytes after gc.collect()"
          + (f", {in_use - BUDGET32:+} against the ESP32 budget of {BUDGET32}"
             if layout.bits == 32 else ""))
    print(f"{layout.name}, {layout.heap} bytes of heap: free heap after gc.collect(),"
          " every 100 intervals:",
          series)
    assert series[-1][0] >= intervals
    frees = [f for _n, f in series]
    # No downward trend: the halves' means agree within 1 KB (allocation noise), and the
    # least-squares slope loses less than 2 KB over the whole run.
    half = len(frees) // 2
    first, second = sum(frees[:half]) / half, sum(frees[half:]) / (len(frees) - half)
    assert second >= first - 1024, (first, second)
    xs = [n for n, _f in series]
    mx, my = sum(xs) / len(xs), sum(frees) / len(frees)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, frees)) / sum((x - mx) ** 2 for x in xs)
    assert slope * (xs[-1] - xs[0]) > -2048, slope
    assert len(gateway.snapshot("m01")) >= intervals
