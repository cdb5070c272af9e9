"""`tmeter provision`: registry keys with rotation, and the device config file the firmware reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.registry import Registry, RegistryError, mosquitto_hash_matches
from protocols import canonical
from tests.gateway.conftest import INTERVAL_S, Offline
from tests.gateway.meters import MeterSpec, reading

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
    "prefs": {"pv_price": int, "import_wtp": int, "battery_price_empty": int, "battery_price_full": int,
              "import_price": int, "feed_in_price": int},
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
                            "battery_price_full": 50000, "import_price": 300000, "feed_in_price": 50000}
    assert out.stat().st_mode & 0o077 == 0  # holds the key: owner only
    reg = Registry(tmp_path / "g.db")
    assert reg.key("m01", 1) == bytes.fromhex(doc["key"])


def test_the_meter_learns_the_community_tariff_from_the_gateway_config(tmp_path: Path) -> None:
    # Its bids value grid energy at the community's tariff, not at a default of its own.
    conf = tmp_path / "gateway.toml"
    conf.write_text('community = "c1"\n[market]\nimport_price = 280000\nexport_price = 70000\n')
    out = tmp_path / "m01.json"
    res = subprocess.run([sys.executable, "-m", "tmeter", "provision", "m01", "--config", str(conf),
                          "--db", str(tmp_path / "g.db"), "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert res.returncode == 0, res.stderr
    prefs = json.loads(out.read_text())["prefs"]
    assert (prefs["import_price"], prefs["feed_in_price"]) == (280000, 70000)
    assert prefs["import_wtp"] == 300000  # the household's own price stays its own


def test_provision_writes_the_release_key_for_over_the_air_updates(tmp_path: Path) -> None:
    from protocols import devconfig

    key = tmp_path / "release.key"
    key.write_text(bytes(range(32)).hex() + "\n")

    def provision(meter: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tmeter", "provision", meter, "--db", str(tmp_path / "g.db"),
                               "--out", str(tmp_path / f"{meter}.json"), *extra],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)

    res = provision("m01", "--release-key", str(key), "--release-key-id", "4")
    assert res.returncode == 0, res.stderr
    cfg = devconfig.parse((tmp_path / "m01.json").read_text())  # as the firmware reads it
    assert cfg["release_key"] == bytes(range(32)).hex() and cfg["release_kid"] == 4
    assert "release_key" not in json.loads(provision("m02").stdout and (tmp_path / "m02.json").read_text())
    (tmp_path / "short.key").write_text("abcd")
    for meter, extra, why in (("m03", ("--release-key", str(tmp_path / "short.key")), "32 bytes"),
                              ("m04", ("--release-key", str(tmp_path / "none.key")), "cannot read"),
                              ("m05", ("--release-key", str(key), "--release-key-id", "0"), "1..65535")):
        res = provision(meter, *extra)
        assert res.returncode == 2 and res.stderr.count("\n") == 1 and why in res.stderr, res.stderr
        assert not (tmp_path / f"{meter}.json").exists()
    assert Registry(tmp_path / "g.db").meters() == ["m01", "m02"]  # a refused key registers nothing


def test_rotation_keeps_old_keys_until_retired(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "g.db")
    first = reg.provision("m01", "c1")
    with pytest.raises(RegistryError, match="already provisioned"):
        reg.provision("m01", "c1")  # no silent rotation
    second = reg.provision("m01", "c1", rotate=True, password=first.mqtt.password)
    assert (first.kid, second.kid) == (1, 2) and first.key != second.key
    assert second.mqtt.password == first.mqtt.password
    assert reg.key("m01", 1) == first.key and reg.current_key("m01") == (2, second.key)
    assert reg.retire("m01", 1) and reg.key("m01", 1) is None
    third = reg.provision("m01", "c1", rotate=True, new_password=True, retire_old=True)
    assert reg.key("m01", 2) is None and reg.current_key("m01") == (3, third.key)
    assert mosquitto_hash_matches(third.mqtt.password, reg.mqtt_hashes()["m01"])
    with pytest.raises(RegistryError, match="not its current one"):
        reg.provision("m01", "c1", rotate=True, password=first.mqtt.password)
    with pytest.raises(RegistryError, match="nothing to rotate"):
        reg.provision("m02", "c1", rotate=True, new_password=True)
    with pytest.raises(RegistryError):
        reg.provision("m01", "c2", rotate=True, new_password=True)  # a meter belongs to one community
    with pytest.raises(RegistryError):
        reg.provision("bad/id", "c1")
    assert reg.current_key("m01") == (3, third.key)  # nothing refused left a trace


def provision_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tmeter", "provision", "m01", "--db", str(tmp_path / "g.db"),
                           "--out", str(tmp_path / "m01.json"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)


def test_cli_refuses_to_reprovision_and_rotates_only_when_asked(tmp_path: Path) -> None:
    assert provision_cli(tmp_path).returncode == 0
    config = tmp_path / "m01.json"
    before = config.read_text()
    reg = Registry(tmp_path / "g.db")
    hashed = reg.mqtt_hashes()["m01"]
    again = provision_cli(tmp_path)
    assert again.returncode == 2 and again.stderr.count("\n") == 1 and "--rotate" in again.stderr, again.stderr
    assert config.read_text() == before and reg.current_key("m01")[0] == 1  # nothing changed
    assert provision_cli(tmp_path, "--new-password").returncode == 2  # only with --rotate
    # --rotate: a new key; the MQTT login (read from the config it replaces) is kept.
    rotated = provision_cli(tmp_path, "--rotate")
    assert rotated.returncode == 0, rotated.stderr
    old, new = json.loads(before), json.loads(config.read_text())
    assert new["kid"] == 2 and new["key"] != old["key"] and new["mqtt"]["password"] == old["mqtt"]["password"]
    assert reg.mqtt_hashes()["m01"] == hashed  # the broker files need no change
    assert reg.key("m01", 1) == bytes.fromhex(old["key"])  # the deployed meter keeps working
    assert config.stat().st_mode & 0o077 == 0
    # A config whose password is not the meter's is refused, and left as it was.
    forged = dict(new, mqtt=dict(new["mqtt"], password="guess"))
    config.write_text(json.dumps(forged))
    refused = provision_cli(tmp_path, "--rotate")
    assert refused.returncode == 2 and "not its current one" in refused.stderr, refused.stderr
    assert json.loads(config.read_text()) == forged and reg.current_key("m01")[0] == 2
    config.unlink()
    missing = provision_cli(tmp_path, "--rotate")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1, missing.stderr
    # --new-password: a new login too, so the broker files must be regenerated.
    renewed = provision_cli(tmp_path, "--rotate", "--new-password")
    assert renewed.returncode == 0 and "mosquitto-config" in renewed.stdout, renewed.stderr
    assert json.loads(config.read_text())["kid"] == 3 and reg.mqtt_hashes()["m01"] != hashed
    reg.close()


def test_the_old_key_is_retired_when_the_meter_is_first_seen_with_the_new_one(offline: Offline) -> None:
    reg = Registry(conn=offline.conn)
    dev = reg.provision("m01", "c1")
    old = MeterSpec("m01", dev.kid, dev.key)
    iv = int(offline.clock.now()) // INTERVAL_S
    assert acks(offline.send(reading(old, "c1", iv, INTERVAL_S)[:2])) == ["stored"]
    new_dev = reg.provision("m01", "c1", rotate=True, password=dev.mqtt.password)
    # Until the meter has its new config, it goes on with the old key.
    assert acks(offline.send(reading(old, "c1", iv, INTERVAL_S)[:2])) == ["stored"]
    assert reg.key("m01", 1) == dev.key and offline.counters["keys_retired"] == 0
    new = MeterSpec("m01", new_dev.kid, new_dev.key, seq=old.seq, counter_imp=old.counter_imp,
                    counter_exp=old.counter_exp)
    assert acks(offline.send(reading(new, "c1", iv, INTERVAL_S)[:2])) == ["stored"]
    assert reg.key("m01", 1) is None and offline.counters["keys_retired"] == 1
    # From now on the old key is refused, at once in the database thread's own cache.
    assert offline.send(reading(old, "c1", iv, INTERVAL_S)[:2]) == []
    assert offline.counters["unknown_key"] == 1
    assert acks(offline.send(reading(new, "c1", iv, INTERVAL_S)[:2])) == ["stored"]
    assert offline.counters["keys_retired"] == 1


def acks(out: list) -> list[str]:
    return [canonical.parse(o.payload.rsplit(b"\n", 1)[0])["res"] for o in out]


def test_keys_for_a_rotation_over_the_air_and_a_factory_reset(tmp_path: Path) -> None:
    """Registry.rotate_key (`tmeter fw rotate-key`), held_key (what awards and commands are
    tagged with) and reinstate (`tmeter fw factory-reset`)."""
    reg = Registry(tmp_path / "g.db")
    first = reg.provision("m01", "c1")
    kid, key = reg.rotate_key("m01")
    assert kid == 2 and len(key) == 32 and key != first.key
    assert reg.held_key("m01") == (1, first.key)  # the meter has only key 1 until it uses key 2
    assert reg.current_key("m01") == (2, key) and reg.valid_keys("m01") == {1: first.key, 2: key}
    assert reg.retire_superseded({"m01": 2}) == 1
    assert reg.held_key("m01") == (2, key) and reg.valid_keys("m01") == {2: key}
    reg.reinstate("m01", 1)  # reset: back on the provisioned key, every other retired
    assert reg.valid_keys("m01") == {1: first.key} and reg.held_key("m01") == (1, first.key)
    for bad in (lambda: reg.rotate_key("nobody"), lambda: reg.reinstate("m01", 9)):
        with pytest.raises(RegistryError):
            bad()
    assert reg.provision("m01", "c1", rotate=True, password=first.mqtt.password).kid == 3  # one series
