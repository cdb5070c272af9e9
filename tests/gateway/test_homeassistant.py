"""Home Assistant sees the community (gateway/ops/homeassistant.py): against a real Mosquitto
running the generated password and ACL files, a Home Assistant login finds retained discovery
configs that follow Home Assistant's documented schema for MQTT sensors, plain JSON states that
agree with the database, availability that follows the meters' last wills; meters read none of it."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gateway import mosquitto_conf
from gateway.daemon import GatewayThread
from gateway.mosquitto_conf import LISTENER_LINES
from gateway.registry import Registry
from protocols import messages, topics
from sim_hardware.harness.forged_meter import MeterLink, MeterSpec
from sim_hardware.harness.mosquitto import MosquittoBroker
from tests.gateway.conftest import first_point_clearing, make_config, wait_until

pytestmark = pytest.mark.mosquitto

# Home Assistant's MQTT sensor (https://www.home-assistant.io/integrations/sensor.mqtt/) and the
# sensor device classes' units (https://www.home-assistant.io/integrations/sensor/#device-class)
# as documented: the keys a discovery config may use here, and what each class accepts.
SENSOR_KEYS = {"name", "unique_id", "object_id", "state_topic", "value_template", "device_class", "state_class",
               "unit_of_measurement", "availability_topic", "payload_available", "payload_not_available", "device"}
DEVICE_KEYS = {"identifiers", "name", "manufacturer", "model", "sw_version", "connections", "via_device"}
STATE_CLASSES = {"measurement", "total", "total_increasing"}
UNITS = {"energy": {"Wh", "kWh", "MWh", "GJ", "MJ"}, "power": {"W", "kW"}, "monetary": {"EUR"}}
CONFIG_TOPIC = re.compile(r"^homeassistant/sensor/[A-Za-z0-9_-]+/[A-Za-z0-9_-]+/config$")


class Watcher:
    """A client holding every message on its subscriptions, retained ones included."""

    def __init__(self, broker: MosquittoBroker, user: str, password: str, filters: list[str]) -> None:
        self.got: dict[str, bytes] = {}
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=user)
        self.c.username_pw_set(user, password)
        self.c.on_message = self._on_message
        self.c.on_connect = lambda c, *a: c.subscribe([(f, 1) for f in filters])
        self.c.connect(broker.host, broker.port, 30)
        self.c.loop_start()

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.got[msg.topic] = msg.payload

    def snapshot(self) -> dict[str, bytes]:
        with self.lock:
            return dict(self.got)

    def close(self) -> None:
        self.c.loop_stop()
        self.c.disconnect()


def check_sensor(topic: str, config: dict[str, object]) -> None:
    assert CONFIG_TOPIC.match(topic), topic
    assert set(config) <= SENSOR_KEYS and {"name", "unique_id", "state_topic"} <= set(config), config
    assert set(config.get("device", {})) <= DEVICE_KEYS and config["device"]["identifiers"]  # type: ignore[index]
    assert config["state_class"] in STATE_CLASSES
    if "device_class" in config:
        assert config["unit_of_measurement"] in UNITS[config["device_class"]], config  # type: ignore[index]
    if config.get("device_class") == "energy":  # what the Energy dashboard takes
        assert config["state_class"] in ("total", "total_increasing")
    assert re.fullmatch(r"\{\{ value_json\.[a-z_]+ \}\}", str(config["value_template"]))


def value(config: dict[str, object], states: dict[str, bytes]) -> object:
    key = str(config["value_template"]).split(".")[1].split()[0]
    return json.loads(states[str(config["state_topic"])])[key]


def test_home_assistant_discovers_the_meters_and_reads_their_states(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, None, homeassistant={"enabled": True, "publish_s": 0.3, "user": "ha",
                                                     "password": "ha-secret"})
    cfg.mqtt.user, cfg.mqtt.password = "gateway", "gw-secret"
    reg = Registry(cfg.db)
    meters = {}
    for name in ("ma", "mb"):
        dev = reg.provision(name, "c1")
        meters[name] = (MeterSpec(name, dev.kid, dev.key), dev.mqtt.password)
    files = mosquitto_conf.write(reg, "c1", "gateway", "gw-secret", tmp_path / "broker", cfg.homeassistant)
    reg.close()
    broker = MosquittoBroker(workdir=tmp_path / "mq", allow_anonymous=False)
    broker.workdir.mkdir()
    broker.extra_config = f"password_file {files.password_file}\nacl_file {files.acl_file}\n{LISTENER_LINES}"
    with broker:
        cfg.mqtt.host, cfg.mqtt.port = broker.host, broker.port
        gw = GatewayThread(cfg, first_point_clearing).start()
        (ma, ma_pw), (mb, mb_pw) = meters["ma"], meters["mb"]
        link = MeterLink(broker, ma, ma_pw)
        ha_filters = ["homeassistant/#", f"{topics.ROOT}c1/ha/#", f"{topics.ROOT}c1/ha-community/#"]
        ha = snoop = None
        try:
            link.subscribe_acks()
            sent = link.send(cfg, 3)
            assert wait_until(lambda: sent <= link.acks.keys())
            status = messages.status("ma", ma.kid, 1, 5, int(time.time()), 1, 1, {})
            link.publish(topics.meter_topic("c1", "ma", "status"), messages.encode(status, ma.key))
            ha = Watcher(broker, "ha", "ha-secret", ha_filters)
            configs_seen = lambda: [t for t in ha.snapshot() if t.endswith("/config")]  # noqa: E731
            assert wait_until(lambda: len(configs_seen()) == 9)  # 4 sensors x 2 meters + the price
            assert wait_until(lambda: ha.snapshot().get(f"{topics.ROOT}c1/ha/ma/availability") == b"online")
            got = ha.snapshot()
            configs = {t: json.loads(p) for t, p in got.items() if t.endswith("/config")}
            for topic, config in configs.items():
                check_sensor(topic, config)
            assert len({c["unique_id"] for c in configs.values()}) == 9
            ma_import = next(c for c in configs.values() if c["unique_id"] == "tmeter_c1_ma_energy_import")
            assert value(ma_import, got) == ma.counter_imp / 1000  # the latest reading's counter, kWh
            assert got[f"{topics.ROOT}c1/ha/mb/availability"] == b"offline"  # never seen
            # The last will says the meter dropped off: availability follows.
            will = messages.status("ma", ma.kid, 1, 1, int(time.time()), 0, 1, {})
            link.publish(topics.meter_topic("c1", "ma", "status"), messages.encode(will, ma.key))
            assert wait_until(lambda: ha.snapshot().get(f"{topics.ROOT}c1/ha/ma/availability") == b"offline")
            # A meter's login reads none of it.
            snoop = Watcher(broker, "mb", mb_pw, ha_filters)
            time.sleep(1.0)
            assert snoop.snapshot() == {}
        finally:
            link.close()
            for w in (ha, snoop):
                if w is not None:
                    w.close()
            gw.stop()


def test_a_home_assistant_login_needs_a_password_and_a_currency_code() -> None:
    from gateway.config import ConfigError, GatewayConfig

    with pytest.raises(ConfigError, match="homeassistant.password: expected a password"):
        GatewayConfig(homeassistant={"user": "ha"})
    with pytest.raises(ConfigError, match="homeassistant.currency"):
        GatewayConfig(homeassistant={"currency": "euro"})


def test_a_meter_cannot_be_provisioned_as_home_assistants_login(tmp_path: Path) -> None:
    from gateway.config import HomeAssistantConfig

    reg = Registry(str(tmp_path / "gw.db"))
    reg.provision("ha", "c1")
    with pytest.raises(ValueError, match="collides"):
        mosquitto_conf.password_file(reg, "c1", "gateway", "pw", HomeAssistantConfig(enabled=True, user="ha",
                                                                                       password="x"))
