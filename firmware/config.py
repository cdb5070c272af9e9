# Device configuration: config.json as `tmeter provision` writes it, plus optional keys with
# defaults (documented in README "Meter firmware"). Loaded once at boot.
import json
from binascii import unhexlify

def _merge(into, defaults):
    for k in defaults:
        if k not in into or (into[k] is None and defaults[k] is not None):
            into[k] = defaults[k]
    return into


def parse(text):
    cfg = json.loads(text)
    for k in ("meter", "community", "kid", "key", "interval_s"):
        if k not in cfg:
            raise ValueError("config.json lacks " + k)
    cfg.setdefault("gate_closure_s", 60)
    # Optional keys this firmware adds; provisioned files need not carry them. (The defaults
    # are literals here rather than module constants: a board keeps no names of boot-only code.)
    _merge(cfg, {
        "poll_s": 10,            # meter poll period, simulated seconds
        "queue_max": 192,        # records kept on flash before the oldest is dropped (2 days)
        "ack_timeout_s": 30,     # real seconds before an unacknowledged reading is sent again
        "send_window": 8,        # readings in flight (sent, not yet acknowledged) at once
        "status_s": 60,          # real seconds between status messages
        "wdt_s": 120,            # watchdog timeout, real seconds
        "heap_log": 0,           # print free heap every N intervals (0: never); used by tests
        "max_intervals": 0,      # stop after N closed intervals (0: run forever); used by tests
    })
    cfg["mqtt"] = _merge(cfg.get("mqtt") or {}, {
        "port": 1883, "user": None, "password": None, "tls": False, "ca": None,
        "keepalive_s": 30,
        "retry_s": 10,           # QoS 1 retransmission of an unacknowledged PUBLISH, real seconds
        "backoff_max_s": 30,     # reconnect backoff ceiling, real seconds
    })
    cfg["mqtt"].setdefault("host", "127.0.0.1")
    cfg["modbus"] = _merge(cfg.get("modbus") or {}, {
        "link": "uart", "baud": 9600, "meter_unit": 1, "meter_model": "sdm630",
        "battery_unit": None, "uart_id": 2, "tx_pin": 17, "rx_pin": 16, "de_pin": 4,
        "timeout_ms": 0,         # response timeout; 0 derives it from the baud rate
        "retries": 2,            # retries after the first attempt of one transaction
        "offline_after": 3,      # failed transactions in a row before a device counts as offline
    })
    cfg["prefs"] = _merge(cfg.get("prefs") or {}, {
        "pv_price": 10000, "import_wtp": 300000, "battery_price_empty": 250000,
        "battery_price_full": 50000,
    })
    cfg.setdefault("wifi", {"ssid": "", "password": ""})
    cfg.setdefault("clock", {"start": None, "epoch": None, "speed": 1})
    if cfg["interval_s"] <= cfg["gate_closure_s"]:
        raise ValueError("interval_s must exceed gate_closure_s")
    cfg["key_bytes"] = unhexlify(cfg["key"])
    return cfg


def load(path):
    with open(path) as f:
        return parse(f.read())


def plan_key(mb):
    """What the register plans of a Modbus config depend on (regplan.json records it)."""
    return str(mb["meter_model"]) + "/" + (str(mb.get("battery_map", "battery"))
                                            if mb.get("battery_unit") is not None else "-")


def load_plans(path, mb):
    """(meter plan, battery plan or None) from the plan file at ``path`` (firmware/regmap.py
    makes it) if it was made for the Modbus config ``mb``; otherwise None."""
    try:
        with open(path) as f:
            saved = json.load(f)
        meter = saved["meter"]
        battery = saved["battery"]
        if saved["key"] != plan_key(mb) or type(meter) is not list or len(meter) != 3:
            return None  # another config's plans, or an older format
        return meter, battery
    except (OSError, ValueError, KeyError, TypeError):
        return None
