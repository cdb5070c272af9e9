"""`tmeter fw config`, `fw rotate-key` and `fw factory-reset`: remote configuration of one meter
over MQTT (protocols/remote.py). The gateway database's part is here (the meter's current key,
a rotation's new key, a reset's return to the provisioned key: gateway/registry.py); the MQTT
exchange is tmeter/fwtools/remote.py's.

  tmeter fw config M NAME=VALUE ... --config gateway.toml    safe settings (protocols/remote.py)
  tmeter fw rotate-key M --config gateway.toml               a new key, sent encrypted
  tmeter fw factory-reset M --config gateway.toml            back to the provisioned config

Each waits for the meter's answer (``--timeout``) and prints one line: exit 0 when the meter
applied it, 1 when it refused (its reason), 2 when it could not be sent or was not answered.
"""

from __future__ import annotations

import argparse
import sys

from protocols import remote as msgs
from protocols.errors import ProtocolError

ACTIONS = ("config", "rotate-key", "factory-reset")


def add_arguments(sub: argparse._SubParsersAction) -> None:
    helps = {"config": "change safe settings of a meter over MQTT",
             "rotate-key": "give a meter a new key over MQTT (encrypted under its current one)",
             "factory-reset": "reset a meter to its provisioned config and key over MQTT"}
    for action in ACTIONS:
        p = sub.add_parser(action, help=helps[action])
        p.add_argument("meter", help="the meter id")
        if action == "config":
            p.add_argument("settings", nargs="*", metavar="NAME=VALUE",
                           help="settable: " + ", ".join(sorted(msgs.SETTINGS)))
        p.add_argument("--config", required=True, help="gateway.toml: database, broker, login")
        p.add_argument("--timeout", type=float, default=30.0,
                       help="seconds to wait for the meter's answer (%(default)s)")


def run(args: argparse.Namespace) -> int:
    from tmeter.fwtools.ota import OtaError

    try:
        return _run(args)
    except OtaError as exc:  # RemoteError, or the broker's: one line
        print(f"tmeter: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from gateway import config as gw_config
    from gateway.mosquitto_conf import ota_login
    from gateway.registry import Registry, RegistryError
    from tmeter.fwtools import ota as fw_ota
    from tmeter.fwtools import remote

    settings = remote.parse_settings(args.settings) if args.fw_command == "config" else {}
    try:
        cfg = gw_config.load(args.config)
    except gw_config.ConfigError as exc:
        raise remote.RemoteError(str(exc).splitlines()[0]) from None
    m = cfg.mqtt
    broker = fw_ota.Broker(m.host, m.port, cfg.community, ota_login(m.user) if m.user else None,
                           m.password, m.tls, m.ca)
    reg = Registry(cfg.db)
    meter = args.meter
    try:
        held = reg.held_key(meter)
        if held is None:
            raise remote.RemoteError(f"{meter}: not provisioned, or no valid key")
        kid = held[0]
        keys = reg.valid_keys(meter)
        if args.fw_command == "rotate-key":
            new_kid, new_key = reg.rotate_key(meter)
            keys[new_kid] = new_key  # its answer comes under the new key

            def make(n: int, k: int) -> bytes:
                return msgs.encode(msgs.rotate(meter, n, keys[k], new_kid, new_key), k, keys[k])
        else:
            op = "set" if settings else "reset"
            fields = {"set": settings} if settings else {}

            def make(n: int, k: int) -> bytes:
                return msgs.encode(msgs.command(meter, n, op, **fields), k, keys[k])
        ex = remote.Exchange(broker, meter)
        try:
            answer = ex.ask(make, keys, kid, args.timeout)
        finally:
            ex.close()
        if not answer["ok"]:
            print(f"tmeter: {meter} refused: {answer['reason']}", file=sys.stderr)
            return 1
        if args.fw_command == "factory-reset":
            reg.reinstate(meter, answer["kid"])  # it boots with its provisioned key again
            print(f"{meter}: factory reset, restarting with its provisioned key {answer['kid']}")
        elif args.fw_command == "rotate-key":
            print(f"{meter}: signs with key {answer['kid']} now; the gateway retires the older"
                  " keys when it first verifies a message under it")
        else:
            print(f"{meter}: set " + ", ".join(f"{k}={v}" for k, v in sorted(settings.items())))
        return 0
    except (RegistryError, ProtocolError) as exc:
        raise remote.RemoteError(f"{meter}: {exc}") from None
    finally:
        reg.close()
