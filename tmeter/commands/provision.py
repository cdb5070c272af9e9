"""`tmeter provision <meter>`: create a meter's key and write its device config; `--rotate`
gives an existing meter a new key (gateway/registry.py: the old key works until the meter is
seen with the new one; the MQTT login is kept, read from the config being replaced, unless
`--new-password`). A new meter's member link (its page on the gateway, gateway/web/member.py) is
printed once; `--rotate-member-link` issues a new one (the old link stops working)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from protocols import devconfig

# Device config options: (flag, section or None for a top-level key, key, type, help). Each
# takes its default from the schema (protocols/devconfig.py), so the CLI cannot drift from it.
DEVICE_OPTIONS: tuple[tuple[str, str | None, str, type, str], ...] = (
    ("--wifi-ssid", "wifi", "ssid", str, "Wi-Fi network of a board"),
    ("--wifi-password", "wifi", "password", str, "its password"),
    ("--ntp-host", None, "ntp_host", str, "time server of a board"),
    ("--modbus-link", "modbus", "link", str, "uart | tcp:HOST:PORT | tty:PATH"),
    ("--baud", "modbus", "baud", int, "RS-485 baud rate"),
    ("--meter-unit", "modbus", "meter_unit", int, "Modbus unit of the energy meter"),
    ("--meter-model", "modbus", "meter_model", str, "sdm630 | sdm120"),
    ("--battery-unit", "modbus", "battery_unit", int,
     "Modbus unit of the battery inverter; without it the meter polls no battery"),
    ("--uart-id", "modbus", "uart_id", int, "board UART"),
    ("--tx-pin", "modbus", "tx_pin", int, "board pin"),
    ("--rx-pin", "modbus", "rx_pin", int, "board pin"),
    ("--de-pin", "modbus", "de_pin", int, "board pin driving the RS-485 transceiver"),
    ("--pv-price", "prefs", "pv_price", int, "micro-currency per kWh"),
    ("--import-wtp", "prefs", "import_wtp", int, "micro-currency per kWh"),
    ("--battery-price-empty", "prefs", "battery_price_empty", int, "micro-currency per kWh"),
    ("--battery-price-full", "prefs", "battery_price_full", int, "micro-currency per kWh"),
    ("--clock-start", "clock", "start", float, "simulated time at the epoch (protocols/simclock.py)"),
    ("--clock-epoch", "clock", "epoch", float, "wall time of the start"),
    ("--clock-speed", "clock", "speed", float, "simulated seconds per wall second"),
)


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    p = parser
    p.add_argument("meter", help="meter id: 1-32 of [A-Za-z0-9_-]")
    p.add_argument("--config", help="gateway.toml: database, community, broker and interval defaults")
    p.add_argument("--db", help="gateway database (overrides --config)")
    p.add_argument("--out", help="device config file to write (default: <meter>.json)")
    p.add_argument("--community", help="community id (default: the config's)")
    p.add_argument("--host", help="MQTT broker host as the meter reaches it")
    p.add_argument("--port", type=int, help="MQTT broker port as the meter reaches it (default: the config's)")
    p.add_argument("--tls", action="store_true", help="the meter connects with TLS (give --ca)")
    p.add_argument("--ca", help="CA certificate path on the device")
    schema = devconfig.defaults()
    p.add_argument("--keepalive", type=int, default=schema["mqtt"]["keepalive_s"],
                   help="MQTT keepalive, seconds (default: %(default)s)")
    p.add_argument("--interval", type=int, help="market interval in seconds")
    p.add_argument("--gate-closure", type=int, help="seconds before interval start")
    p.add_argument("--feeder", action="store_true", default=None,
                   help="this is the feeder meter at the connection point (a rotation keeps what the meter was)")
    p.add_argument("--position", metavar="X,Y",
                   help="the meter's position in km (e.g. 1.2,0.4): the peer-to-peer market's distances come"
                        " from it; without one the meter trades with the grid only under p2p"
                        " (a rotation keeps the stored one)")
    p.add_argument("--preference", metavar="C",
                   help="its preference c_n >= 0 for the peer-to-peer market: currency per kWh per km it"
                        " pays to trade far away (default 0; a rotation keeps the stored one)")
    p.add_argument("--rotate", action="store_true",
                   help="the meter exists: give it a new key id and key; the old key stays valid until the meter"
                        " is seen with the new one")
    p.add_argument("--new-password", action="store_true",
                   help="with --rotate: a new MQTT password too (default: the one in the config file replaced)")
    p.add_argument("--retire-old", action="store_true",
                   help="with --rotate: retire the older keys at once (a key that leaked)")
    p.add_argument("--rotate-member-link", action="store_true",
                   help="issue the member a new page link (the old one and its logins stop working); alone it"
                        " changes nothing else, with --rotate it goes with the new key")
    p.add_argument("--release-key", metavar="FILE",
                   help="the community's release key file (64 hex digits, as `tmeter fw ota --key`): the"
                        " meter takes over-the-air updates signed with it (protocols/ota.py); never stored in"
                        " the database")
    p.add_argument("--release-key-id", type=int, default=1, help="its key id (default: %(default)s)")
    for flag, section, key, kind, text in DEVICE_OPTIONS:
        default = (schema[section] if section else schema)[key]
        p.add_argument(flag, type=kind, default=default, help=f"{text} (default: %(default)s)")


def device_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The device config keys the options give, sections as dicts (Registry.provision's
    keyword overrides)."""
    settings: dict[str, Any] = {}
    for flag, section, key, _kind, _text in DEVICE_OPTIONS:
        value = getattr(args, _dest(flag))
        (settings.setdefault(section, {}) if section else settings)[key] = value
    return settings


def _with_tariff(settings: dict[str, Any], market: Any) -> dict[str, Any]:
    """The community's grid tariff goes to every meter: its bids value grid energy at it."""
    settings.setdefault("prefs", {}).update(
        import_price=market.import_price, feed_in_price=market.export_price)
    return settings


def run(args: argparse.Namespace) -> int:
    from gateway import config  # noqa: PLC0415
    from gateway.registry import (  # noqa: PLC0415
        Registry, RegistryError, gateway_logins, parse_position, parse_preference, read_password)

    cfg = config.load(args.config) if args.config else config.GatewayConfig()
    db_path = args.db or (cfg.db if args.config else "gateway.db")
    out = args.out or f"{args.meter}.json"
    if (args.new_password or args.retire_old) and not args.rotate:
        print("tmeter provision: --new-password and --retire-old go with --rotate", file=sys.stderr)
        return 2
    try:
        position = None if args.position is None else parse_position(args.position)
        preference = None if args.preference is None else parse_preference(args.preference)
    except RegistryError as exc:
        print(f"tmeter provision: {exc}", file=sys.stderr)
        return 2
    if args.rotate_member_link and not args.rotate:
        return _new_member_link(Registry(db_path), args.meter, cfg.web_url)
    release = _release(args)
    if isinstance(release, str):
        print(f"tmeter provision: {release}", file=sys.stderr)
        return 2
    registry = Registry(db_path)
    try:
        # The password the rotated meter keeps is the one in its config, which the new one replaces.
        password = read_password(out, args.meter) if args.rotate and not args.new_password else None
        device = registry.provision(
            args.meter, args.community or cfg.community,
            mqtt_host=args.host or cfg.mqtt.host, mqtt_port=args.port or cfg.mqtt.port,
            tls=args.tls or cfg.mqtt.tls, ca=args.ca, keepalive_s=args.keepalive,
            interval_s=args.interval or cfg.interval_s,
            gate_closure_s=args.gate_closure if args.gate_closure is not None else cfg.gate_closure_s,
            feeder=args.feeder, position=position, preference=preference, rotate=args.rotate,
            new_password=args.new_password, retire_old=args.retire_old, member_link=args.rotate_member_link,
            reserved=gateway_logins(cfg.mqtt.user) if cfg.mqtt.user else (), password=password,
            **_with_tariff(device_settings(args), cfg.market),
        )
        place = registry.place(args.meter)
    except RegistryError as exc:
        print(f"tmeter provision: {exc}", file=sys.stderr)
        return 2
    finally:
        registry.close()
    if release:
        device.doc.update(release)  # checked as the firmware reads it (protocols/devconfig.py)
    path = device.write(out)
    if args.rotate and not args.new_password:
        after = "same MQTT login; the older key works until the meter uses this one"
    else:
        after = "regenerate the broker files: tmeter gateway mosquitto-config"
    print(f"{args.meter}: key id {device.kid} in {db_path}; device config {path} ({after}); {_placed(place)}")
    if device.member_token is not None:
        _print_link(args.meter, cfg.web_url, device.member_token)
    if place is not None and place.position is None and cfg.market.mechanism == "p2p" and not args.feeder:
        print(f"tmeter provision: {args.meter} has no position: under p2p it trades with the grid only"
              " (give --position X,Y)", file=sys.stderr)
    return 0


def _release(args: argparse.Namespace) -> dict[str, Any] | str:
    """The device config's release_key and release_kid from --release-key (empty without it),
    or why the file cannot be used (one line)."""
    from tmeter.fwtools.ota import OtaError, read_key  # noqa: PLC0415

    if args.release_key is None:
        return {}
    if not 1 <= args.release_key_id <= 0xFFFF:  # the firmware reads 0 as "not given": 1
        return f"--release-key-id {args.release_key_id}: expected 1..65535"
    try:
        return {"release_key": read_key(args.release_key).hex(), "release_kid": args.release_key_id}
    except OtaError as exc:
        return str(exc)


def _placed(place: Any) -> str:
    """The meter's place in the p2p market as stored (gateway.registry.Place)."""
    where = "no position" if place.position is None else f"position {place.position[0]:g},{place.position[1]:g} km"
    return f"{where}, preference {place.preference / 1_000_000:g} per kWh per km"


def _new_member_link(registry: Any, meter: str, base_url: str) -> int:
    from gateway.registry import RegistryError  # noqa: PLC0415

    try:
        token = registry.issue_member_token(meter)
    except RegistryError as exc:
        print(f"tmeter provision: {exc}", file=sys.stderr)
        return 2
    finally:
        registry.close()
    _print_link(meter, base_url, token)
    return 0


def _print_link(meter: str, base_url: str, token: str) -> None:
    """The member's link, shown this once (only its hash is stored): the operator hands it over."""
    from gateway.registry import member_link  # noqa: PLC0415

    print(f"{meter}: member link (hand it to the member; shown once, only its hash is kept):"
          f" {member_link(base_url, meter, token)}")
