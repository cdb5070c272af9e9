"""Every firmware module compiles with mpy-cross for the ESP32 (xtensawin); the bytecode build
runs under the unix port the same way as the sources; `tmeter fw` command lines."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tmeter.fwtools import build as board_build
from protocols import messages
from tests.firmware import harness


def test_every_module_compiles_for_xtensawin(fw_build):
    mods = board_build.sources()
    assert any(str(m) == "firmware/app.py" for m in mods)
    for rel in mods:
        assert (fw_build / "xtensawin" / rel.with_suffix(".mpy")).is_file(), rel
        assert (fw_build / "unix" / rel.with_suffix(".mpy")).is_file(), rel
    assert (fw_build / "xtensawin" / "main.py").read_text() == board_build.BOARD_MAIN


def test_deploy_dry_run_prints_mpremote_commands(tmp_path, fw_build):
    cfg = harness.write_config(tmp_path / "m07", "m07", 1883, "uart", harness.sim_clock(1))
    out = subprocess.run([sys.executable, "-m", "tmeter", "fw", "deploy", "--port",
                          "/dev/ttyUSB0", "--config", str(cfg), "--build", str(fw_build),
                          "--dry-run"], capture_output=True, text=True, check=True).stdout
    lines = out.strip().splitlines()
    assert lines[0] == (f"mpremote connect /dev/ttyUSB0 cp -r {fw_build}/xtensawin/firmware "
                        f"{fw_build}/xtensawin/protocols :")
    assert f"cp {cfg} :config.json" in out and ":regplan.json" in out and ":main.py" in out
    assert lines[-1] == "mpremote connect /dev/ttyUSB0 reset"


@pytest.mark.micropython
@pytest.mark.mosquitto
def test_bytecode_build_runs_like_the_sources(tmp_path, mosquitto, sim, clock, gateway, meters,
                                              fw_build):
    """Two meters on one broker, one from sources and one from the .mpy build, produce the same
    kind of records: same fields, same flags, both verified and acknowledged."""
    link = harness.device_link(sim, 0)
    runs = {}
    for meter, build in (("m01", None), ("m02", fw_build / "unix")):
        cfg = harness.write_config(tmp_path / meter, meter, mosquitto.port, link, clock,
                                   max_intervals=4)
        m = harness.Meter(cfg, build=build).start()
        meters.append(m)
        runs[meter] = (m, cfg)
    for meter, (m, cfg) in runs.items():
        assert m.wait(60) == 0, m.output()[-2000:]
        harness.assert_all_acked_once(gateway, meter, cfg.parent, 4)
    a, b = gateway.snapshot("m01"), gateway.snapshot("m02")
    assert [sorted(r) for r in a] == [sorted(r) for r in b]
    assert [r["flags"] for r in a[1:]] == [r["flags"] for r in b[1:]] == [0, 0, 0]
    assert runs["m02"][0].output().count("boot 1") == 1
    with gateway.lock:
        kinds = {(bid["meter"]) for _t, bid in gateway.bids}
    assert kinds == {"m01", "m02"}
    assert messages.FLAG_PARTIAL & a[0]["flags"] and messages.FLAG_PARTIAL & b[0]["flags"]
