"""Meters witness the ledger (docs/architecture.md §9): the firmware, under the real MicroPython
unix port against a real Mosquitto, keeps the largest retained checkpoint it saw and reports its
size and root in every status, so a gateway that rolls its ledger back is caught by the next
status of any meter. A smaller checkpoint, or another root at the same size, is counted
(`cp_rollback`) and never replaces the kept one; the kept one survives a reboot, and a damaged
one read back from flash is dropped rather than stop every status (and with it the connection:
the status is the meter's last will)."""

from __future__ import annotations

import base64
import json
import re
import sqlite3
import time
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from gateway.registry import Registry
from protocols import messages, topics
from sim_hardware.harness.gateway_process import gateway_config, start_gateway, write_config
from sim_hardware.harness.scenario import Scenario
from tests.firmware import harness

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]

OTHER_ROOT = base64.b64encode(bytes(range(32))).decode()


def _root(size: int) -> str:
    """A distinct well-formed root per tree size (the meter cannot check a root, only compare)."""
    return base64.b64encode(bytes([size]) * 32).decode()


def _publisher(port: int) -> paho.Client:
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="witness-test")
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def _checkpoint(client: paho.Client, size: int, root: str, retain: bool = False) -> None:
    msg = messages.checkpoint("tmeter.test/c1", size, root, base64.b64encode(b"note").decode())
    client.publish(topics.checkpoint_topic("c1"), messages.encode(msg), qos=1, retain=retain).wait_for_publish(5)


def _until(what: str, timeout: float, probe):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = probe()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _gateway_view(db: Path) -> tuple[dict | None, dict[int, str]]:
    """The meter's latest status as the gateway stored it, and the gateway's checkpoints."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        row = conn.execute("SELECT body FROM meter_status WHERE meter='m01'").fetchone()
        cps = {size: base64.b64encode(bytes(root)).decode()
               for size, root in conn.execute("SELECT size, root FROM checkpoints")}
    except sqlite3.OperationalError:  # not created yet
        return None, {}
    finally:
        conn.close()
    return (json.loads(row[0]) if row else None), cps


def test_meters_witness_the_gateways_checkpoints(tmp_path, mosquitto, sim, clock, meters):
    gw_dir = tmp_path / "gw"
    gw_dir.mkdir()
    db = gw_dir / "gateway.db"
    registry = Registry(db)
    try:
        kid = registry.provision("m01", "c1", key=harness.meter_key("m01"), interval_s=60,
                                gate_closure_s=10).kid
    finally:
        registry.close()
    scenario = Scenario(meters=1, speed=60, interval_s=60, gate_closure_s=10, start=harness.START)
    write_config(gateway_config(scenario, db, mosquitto, clock), gw_dir / "gateway.toml")
    gw = start_gateway(gw_dir / "gateway.toml", gw_dir, gw_dir / "gateway.log")
    client = None
    try:
        cfg = harness.write_config(tmp_path / "m01", "m01", mosquitto.port, harness.device_link(sim, 0),
                                   clock, kid=kid)
        meters.append(harness.Meter(cfg).start())

        def witnessed(min_size: int = 1, rollbacks: int = 0):
            status, cps = _gateway_view(db)
            if status is None or "cp" not in status or status["c"].get("cp_rollback", 0) != rollbacks:
                return None
            cp = status["cp"]
            return cp if cp["size"] >= min_size and cps.get(cp["size"]) == cp["root"] else None

        # The gateway's own checkpoint, seen by the meter and reported back in its status.
        kept = _until("a status at the gateway with a checkpoint it signed", 40, witnessed)

        # A smaller checkpoint and another root at the kept size: counted, not kept.
        client = _publisher(mosquitto.port)
        _checkpoint(client, kept["size"] - 1, OTHER_ROOT)
        _checkpoint(client, kept["size"], OTHER_ROOT)
        client.publish(topics.checkpoint_topic("c1"), b"{not json", qos=1).wait_for_publish(5)
        after = _until("the rollbacks counted in a status at the gateway", 30,
                       lambda: witnessed(kept["size"], rollbacks=2))
        assert after["root"] != OTHER_ROOT
        status, _cps = _gateway_view(db)
        assert status["c"]["cp_malformed"] == 1, status
        out = meters[0].output()
        assert "Traceback" not in out, out[-3000:]
    finally:
        if client is not None:
            client.loop_stop()
            client.disconnect()
        gw.stop()


def test_the_witness_survives_a_reboot(tmp_path, mosquitto, sim, clock, gateway, meters):
    cfg = harness.write_config(tmp_path / "m01", "m01", mosquitto.port, harness.device_link(sim, 0),
                               clock)
    state = cfg.parent / "state.json"
    client = _publisher(mosquitto.port)
    try:
        _checkpoint(client, 7, _root(7), retain=True)
        first = harness.Meter(cfg).start()
        meters.append(first)

        def status(boot: int, size: int, rollbacks: int):
            with gateway.lock:
                return [s for s in gateway.statuses if s["boot"] == boot and s["online"] == 1
                        and s.get("cp") == {"size": size, "root": _root(size)}
                        and s["c"].get("cp_rollback", -1) >= rollbacks]

        _until("a status with the retained checkpoint", 20, lambda: status(1, 7, 0))
        # Kept on flash with the state, written once per interval with it (the state written at
        # boot holds none yet: the checkpoint may come with the subscriptions, before a status).
        _until("the checkpoint in the state file", 10,
               lambda: state.exists()
               and (json.loads(state.read_text()).get("cp") or {}).get("size") == 7)
        first.kill()

        # While the meter is off, the log is rolled back to 5.
        _checkpoint(client, 5, _root(5), retain=True)
        second = harness.Meter(cfg).start()
        meters.append(second)
        # Counted per delivery: the broker may hand the rolled-back one over twice (queued for the
        # meter's session, and again as the retained message when it subscribes).
        _until("the rollback counted after the reboot, 7 still reported", 20, lambda: status(2, 7, 1))
        # The log grows again past the kept one: kept, nothing more counted.
        _checkpoint(client, 9, _root(9), retain=True)
        later = _until("the larger checkpoint reported", 20, lambda: status(2, 9, 1))
        out = second.output()
        counted = re.findall(r"checkpoint of (\d+) leaves after (\d+): rollback", out)
        assert set(counted) == {("5", "7")} and len(counted) == later[-1]["c"]["cp_rollback"], out
        assert "Traceback" not in out, out[-3000:]
    finally:
        client.loop_stop()
        client.disconnect()


def test_a_damaged_witness_on_flash_is_dropped(tmp_path, mosquitto, sim, clock, gateway, meters):
    cfg = harness.write_config(tmp_path / "m01", "m01", mosquitto.port, harness.device_link(sim, 0),
                               clock)
    (cfg.parent / "state.json").write_text(json.dumps(
        {"boot": 3, "seq": 0, "iv": None, "imp": None, "exp": None, "t": None,
         "cp": {"size": -1, "root": ""}}))
    meter = harness.Meter(cfg).start()
    meters.append(meter)
    empty = {"size": 0, "root": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}  # RFC 6962 2.1

    def reported():
        with gateway.lock:
            return [s for s in gateway.statuses if s["boot"] == 4 and s["cp"] == empty]

    # The rest of the state holds (boot 4 after 3), the status says "no checkpoint seen".
    _until("a status of boot 4 with the empty tree", 20, reported)
    out = meter.output()
    assert "witnessed checkpoint unreadable" in out and "Traceback" not in out, out[-3000:]
