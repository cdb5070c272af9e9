"""Home Assistant sees the community: MQTT discovery and plain JSON states, published by the
gateway (read-only for Home Assistant; the signed meter protocol stays as it is).

Meters' payloads end in an HMAC trailer, so Home Assistant cannot read them; the gateway, which
has verified them, republishes what a household wants on its dashboard as retained plain JSON:

- discovery (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery): one retained
  config per entity on ``<prefix>/sensor/<node>/<object>/config``, the node being
  ``tmeter_<community>_<meter>``: energy imported and exported (``device_class: energy``,
  ``state_class: total_increasing``, kWh: they land in the Energy dashboard), the last
  interval's average power (W), the member's bill this month (``device_class: monetary``,
  ``state_class: total``), and one community entity, the last clearing price per kWh;
- states: ``tm/v1/<community>/ha/<meter>/state`` (and ``tm/v1/<community>/ha-community/state``,
  a level no meter id can take), one JSON object each, from the database: the meter's counters
  of its latest reading, its last interval, its settlement lines of the month (UTC);
- availability: ``tm/v1/<community>/ha/<meter>/availability``, ``online``/``offline`` from the
  meter's presence (``meter_status.online``), which its last will sets offline when it drops off.

Who may read them is the broker's ACL (gateway/mosquitto_conf.py): the Home Assistant login of
``[homeassistant] user`` reads the discovery prefix and these topics; meters do not.
"""

from __future__ import annotations

import calendar
import json
import sqlite3
import time
from typing import Any

from gateway.config import GatewayConfig
from gateway.ingest.codec import Outgoing
from protocols import topics

MANUFACTURER = "tmeter"
COMMUNITY_NODE = "community"  # the community entity's node id (its topics are apart from meters')


def _root(cfg: GatewayConfig) -> str:
    return f"{topics.ROOT}{cfg.community}/ha"


def state_topic(cfg: GatewayConfig, meter: str) -> str:
    return f"{_root(cfg)}/{meter}/state"


def availability_topic(cfg: GatewayConfig, meter: str) -> str:
    return f"{_root(cfg)}/{meter}/availability"


def community_state_topic(cfg: GatewayConfig) -> str:
    return f"{_root(cfg)}-{COMMUNITY_NODE}/state"


# (object id, name, value key, device class, state class, unit) of each meter's sensors; a unit
# of None is the configured currency.
METER_SENSORS: tuple[tuple[str, str, str, str, str, str | None], ...] = (
    ("energy_import", "Energy imported", "energy_import_kwh", "energy", "total_increasing", "kWh"),
    ("energy_export", "Energy exported", "energy_export_kwh", "energy", "total_increasing", "kWh"),
    ("power", "Power (last interval, + import)", "power_w", "power", "measurement", "W"),
    ("bill_month", "Bill this month", "bill_month", "monetary", "total", None),
)


def _device(cfg: GatewayConfig, node: str, name: str) -> dict[str, Any]:
    return {"identifiers": [node], "name": name, "manufacturer": MANUFACTURER,
            "model": "transactive meter" if node != _node(cfg, COMMUNITY_NODE) else "energy community gateway"}


def _node(cfg: GatewayConfig, meter: str) -> str:
    return f"tmeter_{cfg.community}_{meter}"


def discovery(cfg: GatewayConfig, meters: list[str]) -> list[Outgoing]:
    """The retained discovery configs of every meter's sensors and of the community price."""
    ha = cfg.homeassistant
    out = []
    for meter in meters:
        node = _node(cfg, meter)
        for obj, name, key, device_class, state_class, unit in METER_SENSORS:
            config = {
                "name": name, "unique_id": f"{node}_{obj}", "object_id": f"{node}_{obj}",
                "state_topic": state_topic(cfg, meter), "value_template": f"{{{{ value_json.{key} }}}}",
                "device_class": device_class, "state_class": state_class,
                "unit_of_measurement": unit or ha.currency,
                "availability_topic": availability_topic(cfg, meter),
                "payload_available": "online", "payload_not_available": "offline",
                "device": _device(cfg, node, f"tmeter {meter}"),
            }
            out.append(_retained(f"{ha.discovery_prefix}/sensor/{node}/{obj}/config", config))
    node = _node(cfg, COMMUNITY_NODE)
    price = {"name": "Community price", "unique_id": f"{node}_price", "object_id": f"{node}_price",
             "state_topic": community_state_topic(cfg), "value_template": "{{ value_json.price }}",
             "state_class": "measurement", "unit_of_measurement": f"{ha.currency}/kWh",
             "device": _device(cfg, node, f"tmeter community {cfg.community}")}
    out.append(_retained(f"{ha.discovery_prefix}/sensor/{node}/price/config", price))
    return out


def _retained(topic: str, body: dict[str, Any]) -> Outgoing:
    return Outgoing(topic, json.dumps(body, sort_keys=True).encode(), qos=1, retain=True)


def month_start(t: float) -> int:
    """Unix time of the first instant of the UTC month of ``t``."""
    y, m = time.gmtime(t)[:2]
    return calendar.timegm((y, m, 1, 0, 0, 0))


def states(conn: sqlite3.Connection, cfg: GatewayConfig, meters: list[str], now: float) -> list[Outgoing]:
    """Every meter's state, its availability and the community's price, retained JSON."""
    since_iv = month_start(now) // cfg.interval_s
    out = [_meter_state(conn, cfg, meter, since_iv) for meter in meters]
    out += [Outgoing(availability_topic(cfg, m), _availability(conn, m).encode(), qos=1, retain=True) for m in meters]
    row = conn.execute("SELECT price FROM intervals WHERE state != 'open' AND price IS NOT NULL"
                       " ORDER BY iv DESC LIMIT 1").fetchone()
    out.append(_retained(community_state_topic(cfg), {"price": None if row is None else row[0] / 1e6}))
    return out


def _meter_state(conn: sqlite3.Connection, cfg: GatewayConfig, meter: str, since_iv: int) -> Outgoing:
    last = conn.execute("SELECT cnt_imp_wh, cnt_exp_wh, imp_wh, exp_wh FROM readings WHERE meter=?"
                        " ORDER BY iv DESC, id DESC LIMIT 1", (meter,)).fetchone()
    paid_to = conn.execute("SELECT COALESCE(SUM(amount), 0) FROM settlements WHERE meter=? AND iv>=?",
                           (meter, since_iv)).fetchone()[0]
    state: dict[str, Any] = {"bill_month": -paid_to / 1e6}
    if last is not None:
        state.update(energy_import_kwh=last[0] / 1000, energy_export_kwh=last[1] / 1000,
                     power_w=round((last[2] - last[3]) * 3600 / cfg.interval_s))
    return _retained(state_topic(cfg, meter), state)


def _availability(conn: sqlite3.Connection, meter: str) -> str:
    row = conn.execute("SELECT online FROM meter_status WHERE meter=?", (meter,)).fetchone()
    return "online" if row is not None and row[0] == 1 else "offline"
