"""`tmeter provision <meter>`: create (or rotate) a meter's key and write its device config."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    p.add_argument("meter", help="meter id: 1-32 of [A-Za-z0-9_-]")
    p.add_argument("--config", help="gateway.toml: database, community, broker and interval defaults")
    p.add_argument("--db", help="gateway database (overrides --config)")
    p.add_argument("--out", help="device config file to write (default: <meter>.json)")
    p.add_argument("--community")
    p.add_argument("--host", help="MQTT broker host as the meter reaches it")
    p.add_argument("--port", type=int)
    p.add_argument("--tls", action="store_true")
    p.add_argument("--ca", help="CA certificate path on the device")
    p.add_argument("--keepalive", type=int, default=30)
    p.add_argument("--interval", type=int, help="market interval in seconds")
    p.add_argument("--gate-closure", type=int, help="seconds before interval start")
    p.add_argument("--feeder", action="store_true", help="this is the feeder meter at the connection point")
    p.add_argument("--retire-old", action="store_true", help="retire the meter's older keys at once")
    p.add_argument("--wifi-ssid", default="")
    p.add_argument("--wifi-password", default="")
    p.add_argument("--ntp-host", default="pool.ntp.org")
    p.add_argument("--modbus-link", default="uart", help="uart | tcp | ...")
    p.add_argument("--baud", type=int, default=9600)
    p.add_argument("--meter-unit", type=int, default=1)
    p.add_argument("--meter-model", default="sdm630")
    p.add_argument("--battery-unit", type=int, default=2)
    p.add_argument("--uart-id", type=int, default=2)
    p.add_argument("--tx-pin", type=int, default=17)
    p.add_argument("--rx-pin", type=int, default=16)
    p.add_argument("--de-pin", type=int, default=4)
    p.add_argument("--pv-price", type=int, default=10_000, help="micro-currency per kWh")
    p.add_argument("--import-wtp", type=int, default=300_000)
    p.add_argument("--battery-price-empty", type=int, default=250_000)
    p.add_argument("--battery-price-full", type=int, default=50_000)
    p.add_argument("--clock-start", type=float)
    p.add_argument("--clock-epoch", type=float)
    p.add_argument("--clock-speed", type=float, default=1)


def run(args: argparse.Namespace) -> int:
    from gateway import config  # noqa: PLC0415
    from gateway.registry import (ClockSettings, ModbusSettings, Prefs, Registry,  # noqa: PLC0415
                                  RegistryError)

    cfg = config.load(args.config) if args.config else config.GatewayConfig()
    db_path = args.db or (cfg.db if args.config else "gateway.db")
    registry = Registry(db_path)
    try:
        device = registry.provision(
            args.meter, args.community or cfg.community,
            mqtt_host=args.host or cfg.mqtt.host, mqtt_port=args.port or cfg.mqtt.port,
            tls=args.tls or cfg.mqtt.tls, ca=args.ca, keepalive_s=args.keepalive,
            interval_s=args.interval or cfg.interval_s,
            gate_closure_s=args.gate_closure if args.gate_closure is not None else cfg.gate_closure_s,
            feeder=args.feeder, retire_old=args.retire_old,
            wifi={"ssid": args.wifi_ssid, "password": args.wifi_password}, ntp_host=args.ntp_host,
            modbus=ModbusSettings(args.modbus_link, args.baud, args.meter_unit, args.meter_model,
                                  args.battery_unit, args.uart_id, args.tx_pin, args.rx_pin, args.de_pin),
            prefs=Prefs(args.pv_price, args.import_wtp, args.battery_price_empty, args.battery_price_full),
            clock=ClockSettings(args.clock_start, args.clock_epoch, args.clock_speed),
        )
    except RegistryError as exc:
        print(f"tmeter provision: {exc}", file=sys.stderr)
        return 2
    finally:
        registry.close()
    path = device.write(args.out or f"{args.meter}.json")
    print(f"{args.meter}: key id {device.kid} in {db_path}; device config {path}"
          " (regenerate the broker files: tmeter gateway mosquitto-config)")
    return 0
