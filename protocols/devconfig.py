# The device config, config.json: what `tmeter provision` writes (gateway/registry.py) and a
# meter reads at boot (firmware/config.py), one schema for both sides. A meter reads it once:
# firmware/main.py unloads this module again after boot.
#
# Five keys have no default: who the meter is, its key, and the market interval, which must be
# the gateway's. Every other key has the default defaults() gives; a key that is missing or null
# takes its default. Times are seconds (simulated where the comment says so, otherwise real),
# prices micro-currency per kWh.
import json
from binascii import unhexlify

from protocols import const

_REQUIRED = const(("meter", "community", "kid", "key", "interval_s"))
_KEY_LEN = const(32)  # bytes of HMAC-SHA256 key (protocols/auth.py)


def defaults():
    """Every key with a default, in the order `tmeter provision` writes them. A function, not a
    module constant: each caller gets a dict of its own to fill in, and a booted meter holds
    the name already (each new name costs it memory: tests/firmware/test_memory.py)."""
    return {
        "gate_closure_s": 60,    # bids close this long before their interval starts
        "mqtt": {
            "host": "127.0.0.1", "port": 1883,
            "user": None, "password": None,  # null: an anonymous broker (tests, a bench)
            "tls": False, "ca": None,        # ca: the CA certificate's path on the device
            "keepalive_s": 30,
            "retry_s": 10,       # QoS 1 retransmission of an unacknowledged PUBLISH
            "backoff_max_s": 30,  # reconnect backoff ceiling
        },
        "wifi": {"ssid": "", "password": ""},  # boards only
        "ntp_host": "pool.ntp.org",            # boards only
        "modbus": {
            "link": "uart", "baud": 9600, "meter_unit": 1, "meter_model": "sdm630",
            # No battery unless provisioned with one (`--battery-unit`): many households have
            # none, and polling a unit that is not there costs bus time and offline counts.
            "battery_unit": None,
            "battery_map": "battery",  # its register map (protocols/registers.py)
            "uart_id": 2, "tx_pin": 17, "rx_pin": 16, "de_pin": 4,
            "timeout_ms": 0,     # response timeout; 0 derives it from the baud rate
            "retries": 2,        # retries after the first attempt of one transaction
            "offline_after": 3,  # failed transactions in a row before a device counts as offline
        },
        "prefs": {               # the household's prices for bidding
            "pv_price": 10000, "import_wtp": 300000, "battery_price_empty": 250000,
            "battery_price_full": 50000,
            # The community's grid tariff (the gateway's market.import_price/export_price, which
            # provisioning copies here): what a kWh from or to the grid is worth to the meter.
            "import_price": 300000, "feed_in_price": 50000,
        },
        "clock": {"start": None, "epoch": None, "speed": 1},  # protocols/simclock.py
        "poll_s": 10,            # meter poll period, simulated
        "queue_max": 192,        # records kept on flash before the oldest is dropped (2 days)
        "ack_timeout_s": 30,     # before an unacknowledged reading is sent again
        "send_window": 8,        # readings in flight (sent, not yet acknowledged) at once
        "status_s": 60,          # between status messages
        "wdt_s": 120,            # watchdog timeout
        "heap_log": 0,           # print free heap every N intervals (0: never); for tests
        "max_intervals": 0,      # stop after N closed intervals (0: run forever); for tests
    }


def _merge(cfg, defaults):
    # Fills in what ``cfg`` lacks or holds as null, section by section; keeps other keys.
    for k in defaults:
        value = defaults[k]
        if type(value) is dict:
            section = cfg.get(k)
            if section is None:
                section = cfg[k] = {}
            elif type(section) is not dict:
                raise ValueError("config.json: " + k + " is not an object")
            _merge(section, value)
        elif cfg.get(k) is None:
            cfg[k] = value
    return cfg


def parse(text):
    """The config in the JSON ``text`` with every default filled in, plus ``key_bytes``, the
    key decoded. Raises ValueError if a required key is missing or a value cannot work."""
    cfg = json.loads(text)
    if type(cfg) is not dict:
        raise ValueError("config.json is not an object")
    for k in _REQUIRED:
        if cfg.get(k) is None:
            raise ValueError("config.json lacks " + k)
    _merge(cfg, defaults())
    if cfg["interval_s"] <= cfg["gate_closure_s"]:
        raise ValueError("interval_s must exceed gate_closure_s")
    key = unhexlify(cfg["key"])
    if len(key) != _KEY_LEN:
        raise ValueError("key must be 32 bytes in hex")
    cfg["key_bytes"] = key
    # Optional (over-the-air updates, protocols/ota.py): the community's release key, which
    # signs update manifests; release_kid (default 1) names it, ota_trial_s (default 600) is
    # how long a new bundle may run unacknowledged before the meter rolls back.
    rk = cfg.get("release_key")
    if rk is not None and (type(rk) is not str or len(unhexlify(rk)) != _KEY_LEN):
        raise ValueError("release_key must be 32 bytes in hex")
    return cfg
