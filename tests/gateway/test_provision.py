"""`tmeter provision`: registry keys with rotation, and the device config file the firmware reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.registry import Registry, RegistryError

ROOT = Path(__file__).parents[2]
# Every key of the schema (protocols/devconfig.py), in the order the registry writes them; no
# battery unless provisioned with one.
LAYOUT = {
    "meter": str, "community": str, "kid": int, "key": str, "interval_s": int, "gate_closure_s": int,
    "mqtt": {"host": str, "port": int, "user": str, "password": str, "tls": bool, "ca": type(None), "keepalive_s": int,
             "retry_s": int, "backoff_max_s": int},
    "wifi": {"ssid": str, "password": str}, "ntp_host": str,
    "modbus": {"link": str, "baud": int, "meter_unit": int, "meter_model": str, "battery_unit": type(None),
               "battery_map": str, "uart_id": int, "tx_pin": int, "rx_pin": int, "de_pin": int, "timeout_ms": int,
               "retries": int, "offline_after": int},
    "prefs": {"pv_price": int, "import_wtp": int, "battery_price_empty": int, "battery_price_full": int},
    "clock": {"start": type(None), "epoch": type(None), "speed": int},
    "poll_s": int, "queue_max": int, "ack_timeout_s": int, "send_window": int, "status_s": int, "wdt_s": int,
    "heap_log": int, "max_intervals": int,
}


def check_layout(doc: dict, layout: dict) -> None:
    assert list(doc) == list(layout)
    for name, kind in layout.items():
        if isinstance(kind, dict):
            check_layout(doc[name], kind)
        else:
            assert type(doc[name]) is kind, name


def test_cli_writes_the_device_config_the_firmware_reads(tmp_path: Path) -> None:
    out = tmp_path / "m01.json"
    res = subprocess.run([sys.executable, "-m", "tmeter", "provision", "m01", "--db", str(tmp_path / "g.db"),
                          "--out", str(out), "--port", "1884"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
    doc = json.loads(out.read_text())
    check_layout(doc, LAYOUT)
    assert doc["meter"] == "m01" and doc["kid"] == 1 and len(bytes.fromhex(doc["key"])) == 32
    assert doc["mqtt"]["user"] == "m01" and doc["mqtt"]["port"] == 1884 and len(doc["mqtt"]["password"]) >= 16
    assert doc["prefs"] == {"pv_price": 10000, "import_wtp": 300000, "battery_price_empty": 250000,
                            "battery_price_full": 50000}
    assert out.stat().st_mode & 0o077 == 0  # holds the key: owner only
    reg = Registry(tmp_path / "g.db")
    assert reg.key("m01", 1) == bytes.fromhex(doc["key"])


def test_rotation_keeps_old_keys_until_retired(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "g.db")
    first = reg.provision("m01", "c1")
    second = reg.provision("m01", "c1")
    assert (first.kid, second.kid) == (1, 2) and first.key != second.key
    assert reg.key("m01", 1) == first.key and reg.current_key("m01") == (2, second.key)
    assert reg.retire("m01", 1) and reg.key("m01", 1) is None
    third = reg.provision("m01", "c1", retire_old=True)
    assert reg.key("m01", 2) is None and reg.current_key("m01") == (3, third.key)
    with pytest.raises(RegistryError):
        reg.provision("m01", "c2")  # a meter belongs to one community
    with pytest.raises(RegistryError):
        reg.provision("bad/id", "c1")
