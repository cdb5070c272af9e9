"""`tmeter gateway run|mosquitto-config`: the daemon, and the broker files for its meters."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="gateway_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="run the gateway daemon (SIGTERM stops it cleanly)")
    run.add_argument("--config", required=True, help="gateway.toml")
    run.add_argument("--log-level", default="INFO")
    run.add_argument("--init", action="store_true",
                     help="create a new database where none is although a ledger key exists (a new ledger); "
                          "refused if the database exists")
    mc = sub.add_parser("mosquitto-config", help="write Mosquitto password and ACL files from the registry")
    mc.add_argument("--config", required=True, help="gateway.toml (community, database, gateway MQTT user)")
    mc.add_argument("--out", default=".", help="folder for the files 'passwd' and 'acl'")


def run(args: argparse.Namespace) -> int:
    if args.gateway_command == "run":
        return _run_daemon(args)
    return _mosquitto_config(args)


def _run_daemon(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415 - heavy imports only for the command that needs them
    import logging  # noqa: PLC0415
    import signal  # noqa: PLC0415

    from gateway import config  # noqa: PLC0415
    from gateway.daemon import Gateway, StorageError  # noqa: PLC0415

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config.load(args.config)
    import faulthandler  # noqa: PLC0415

    faulthandler.register(signal.SIGUSR1)  # `kill -USR1` prints every thread's stack to the log

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGUSR2, _dump_tasks)  # `kill -USR2`: every task's stack
        await Gateway(cfg, init=args.init).run(stop)

    try:
        asyncio.run(main())
    except StorageError as exc:  # before anything was created or connected
        print(f"tmeter gateway run: {exc}", file=sys.stderr)
        return 2
    return 0


def _dump_tasks() -> None:
    import asyncio  # noqa: PLC0415

    for task in asyncio.all_tasks():
        task.print_stack(file=sys.stderr)


def _mosquitto_config(args: argparse.Namespace) -> int:
    from gateway import config, mosquitto_conf  # noqa: PLC0415
    from gateway.registry import Registry  # noqa: PLC0415

    cfg = config.load(args.config)
    if not cfg.mqtt.user or not cfg.mqtt.password:
        print("gateway.toml needs [mqtt] user and password for the gateway's own login", file=sys.stderr)
        return 2
    registry = Registry(cfg.db)
    try:
        files = mosquitto_conf.write(registry, cfg.community, cfg.mqtt.user, cfg.mqtt.password, args.out)
    except ValueError as exc:  # a meter id that is one of the gateway's logins: nothing written
        print(f"tmeter gateway mosquitto-config: {exc}", file=sys.stderr)
        return 2
    finally:
        registry.close()
    print(f"wrote {files.password_file} and {files.acl_file}; add to mosquitto.conf:\n")
    print(files.config_lines())
    print("and after every listener line (each connection's client id becomes its user name):\n")
    print(mosquitto_conf.LISTENER_LINES)
    return 0
