"""`tmeter gateway run|mosquitto-config|quarantine`: the daemon, the broker files for its meters,
and the readings ingest kept aside."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from tmeter.commands.dbfile import UsageError, one_line, open_database

if TYPE_CHECKING:
    import sqlite3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="gateway_command", metavar="ACTION", required=True)
    run = sub.add_parser("run", help="run the gateway daemon (SIGTERM stops it cleanly)")
    run.add_argument("--config", required=True, help="gateway.toml")
    run.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (%(default)s), to stderr")
    run.add_argument("--init", action="store_true",
                     help="create a new database where none is although a ledger key exists (a new ledger); "
                          "refused if the database exists")
    mc = sub.add_parser("mosquitto-config", help="write Mosquitto password and ACL files from the registry")
    mc.add_argument("--config", required=True, help="gateway.toml (community, database, gateway MQTT user)")
    mc.add_argument("--out", default=".", help="folder for the files 'passwd' and 'acl'")
    qu = sub.add_parser("quarantine", help="list the readings kept aside, never settled (read-only)")
    qu.add_argument("--config", required=True, help="gateway.toml (database)")
    qu.add_argument("--meter", help="only this meter's readings")
    qu.add_argument("--json", action="store_true", help="one JSON array, for scripts")


def run(args: argparse.Namespace) -> int:
    if args.gateway_command == "run":
        return _run_daemon(args)
    if args.gateway_command == "quarantine":
        return _quarantine(args)
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

    from gateway.web.auth import TokenFileError  # noqa: PLC0415

    try:
        asyncio.run(main())
    except (StorageError, TokenFileError) as exc:  # at start, before the daemon serves anything
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
        files = mosquitto_conf.write(registry, cfg.community, cfg.mqtt.user, cfg.mqtt.password, args.out,
                                     cfg.homeassistant)
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


_QUARANTINE_COLUMNS = ("meter", "boot", "seq", "iv", "t0", "t1", "imp_wh", "exp_wh", "flags", "reason", "leaf",
                       "received")


def _quarantine(args: argparse.Namespace) -> int:
    """The quarantine table (gateway/ingest/store.py) for an operator, read-only: a running
    gateway is not disturbed and a copy of the database is not changed."""
    import sqlite3  # noqa: PLC0415

    from gateway import config  # noqa: PLC0415

    cfg = config.load(args.config)  # a bad config: the CLI's one line per mistake
    try:
        conn = open_database(cfg.db)
        try:
            rows = _quarantined(conn, args.meter)
        finally:
            conn.close()
    except (UsageError, sqlite3.DatabaseError, OSError) as exc:
        print(f"tmeter gateway quarantine: {one_line(exc)}", file=sys.stderr)
        return 2
    if args.json:
        import json  # noqa: PLC0415

        print(json.dumps(rows))
    elif not rows:
        print(f"no quarantined readings{f' of {args.meter}' if args.meter else ''} in {cfg.db}")
    else:
        _print_quarantine(rows)
    return 0


def _quarantined(conn: sqlite3.Connection, meter: str | None) -> list[dict[str, object]]:
    """Every quarantined reading (of ``meter``), oldest interval first, with its ledger leaf;
    an unknown meter is a mistake, not an empty answer."""
    if meter is not None and conn.execute("SELECT 1 FROM meters WHERE meter=?", (meter,)).fetchone() is None:
        raise UsageError(f"no meter {meter!r} in the registry")
    where, params = ("WHERE meter=?", (meter,)) if meter is not None else ("", ())
    cur = conn.execute(f"SELECT {', '.join(_QUARANTINE_COLUMNS)} FROM quarantine {where}"  # noqa: S608 - fixed names
                       " ORDER BY iv, meter, boot, seq", params)
    return [dict(zip(_QUARANTINE_COLUMNS, row, strict=True)) for row in cur]


def _print_quarantine(rows: list[dict[str, object]]) -> None:
    from collections import Counter  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    table = Table(title="Quarantined readings (kept aside, ledgered, never settled)")
    for name in ("meter", "boot", "seq", "interval", "t0 (UTC)", "t1 (UTC)", "imp Wh", "exp Wh", "reason",
                 "leaf"):
        table.add_column(name, overflow="fold")
    for r in rows:
        cells = (r["meter"], r["boot"], r["seq"], r["iv"], _utc(r["t0"]), _utc(r["t1"]), r["imp_wh"], r["exp_wh"],
                 r["reason"], r["leaf"])
        table.add_row(*(Text(str(c)) for c in cells))  # Text: a "[" in a cell is not rich markup
    # Piped into a file or grep, a row stays one line (rich would fold it to 80 columns).
    console = Console(width=None if sys.stdout.isatty() else 1000)
    console.print(table)
    counts = Counter(str(r["reason"]) for r in rows)
    console.print(f"{len(rows)} quarantined: " + ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items())),
                  markup=False, highlight=False)


def _utc(t: object) -> str:
    import datetime  # noqa: PLC0415

    try:
        return datetime.datetime.fromtimestamp(int(t), datetime.UTC).strftime("%Y-%m-%d %H:%M:%S")  # type: ignore[call-overload]
    except (OverflowError, ValueError, OSError, TypeError):
        return str(t)  # outside what a calendar shows: the number itself
