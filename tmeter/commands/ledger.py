"""`tmeter ledger verify|prove|check-proof|export-checkpoint|export-readings|consistency|erase|archive|prune`: the ledger
for auditors and the operator's retention."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tmeter.commands.dbfile import UsageError, one_line, open_database


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="gateway.toml (database, origin, key file)")
        p.add_argument("--db", help="gateway database (overrides --config)")
        p.add_argument("--pubkey", help="the ledger's Ed25519 public key (PEM); default: from the key file")
        p.add_argument("--origin", help="checkpoint origin (default: from --config, else the database)")

    ver = sub.add_parser("verify", help="check the whole log; names what failed")
    common(ver)
    ver.add_argument("--checkpoint", action="append", default=[], metavar="NOTE",
                     help="a signed checkpoint note obtained earlier (retained topic, export-checkpoint, a witness):"
                          " the log must extend it; repeatable")
    ver.add_argument("--since", metavar="NOTE",
                     help="a signed checkpoint note verified earlier: prove the log extends it (RFC 9162 consistency"
                          " proof from its stored frontier) and check only the leaves after it, their rows and"
                          " intervals, in time proportional to the new leaves; leaves before it are NOT opened"
                          " again (their roots still prove the log extends them), witnesses are not read")
    prove = sub.add_parser("prove", help="inclusion proofs of a meter's records in one interval")
    common(prove)
    prove.add_argument("--meter", required=True, help="the meter whose records are proven")
    prove.add_argument("--interval", type=int, required=True, help="the market interval (index)")
    check = sub.add_parser("check-proof", help="check a proof from `prove` offline: a checkpoint note and the "
                                               "gateway's public key are all it trusts (no database)")
    check.add_argument("--proof", required=True, metavar="FILE", help="the JSON `tmeter ledger prove` wrote")
    check.add_argument("--checkpoint", required=True, metavar="NOTE",
                       help="a signed checkpoint note obtained independently (export-checkpoint), or the "
                            "checkpoint message of the retained checkpoint topic")
    check.add_argument("--pubkey", required=True, metavar="PEM", help="the gateway's Ed25519 public key (PEM)")
    check.add_argument("--origin", help="the log's origin (default: the checkpoint note's first line)")
    check.add_argument("--meter-key", action="append", default=[], metavar="PEM",
                       help="the meter's ECDSA P-256 public key (PEM, from `ledger export-readings`): every reading"
                            " in the proof must be signed by it (or by another --meter-key: a replaced board);"
                            " repeatable")
    export = sub.add_parser("export-checkpoint", help="write note, body, sig and pub.pem for openssl")
    common(export)
    export.add_argument("--out", required=True, help="folder for note, body, sig and pub.pem")
    export.add_argument("--size", type=int, help="checkpoint tree size (default: the latest)")
    readings = sub.add_parser("export-readings", help="a meter's signed readings for third parties: each body, its"
                                                      " DER signature and the meter's public keys, for openssl")
    common(readings)
    readings.add_argument("meter", help="the meter whose signed readings are exported")
    readings.add_argument("--out", required=True, metavar="DIR", help="a new (or empty) folder")
    readings.add_argument("--from", dest="from_iv", type=int, metavar="IV", help="first interval (index)")
    readings.add_argument("--to", dest="to_iv", type=int, metavar="IV", help="last interval (index)")
    cons = sub.add_parser("consistency", help="consistency proof between two checkpoints")
    common(cons)
    cons.add_argument("--old", type=int, required=True, help="older checkpoint's tree size")
    cons.add_argument("--new", type=int, help="newer checkpoint's tree size (default: the latest)")
    arch = sub.add_parser("archive", help="write a closed period (between two checkpoints) to its own file, to be"
                                          " verified later with `verify --db FILE --since START-NOTE`")
    common(arch)
    arch.add_argument("--from", dest="first", type=int, required=True, metavar="SIZE",
                      help="checkpoint size the period starts after (0: the log's start)")
    arch.add_argument("--to", dest="last", type=int, required=True, metavar="SIZE",
                      help="checkpoint size the period ends at")
    arch.add_argument("--out", required=True, metavar="FILE",
                      help="the archive, a new SQLite file: leaves, openings, rows, intervals, checkpoints, no keys")
    prune = sub.add_parser("prune", help="remove archived leaves from this database (retention): a dry run"
                                          " unless --yes; refused unless every leaf removed is in a verified"
                                          " archive and outside the settlement window")
    common(prune)
    what = prune.add_mutually_exclusive_group(required=True)
    what.add_argument("--before", metavar="DATE|SIZE",
                      help="prune up to a checkpoint: its size, or a date (YYYY-MM-DD[THH:MM[:SS]], UTC) for the"
                           " last checkpoint signed at or before it; the archives `ledger archive` recorded must"
                           " hold every leaf removed")
    what.add_argument("--archive", metavar="FILE",
                      help="prune the period of this archive file (from `tmeter ledger archive`), verified here"
                           " before anything goes; keep it (and its last checkpoint note) off the Pi")
    prune.add_argument("--yes", action="store_true",
                       help="delete: without it prune says what it would delete (leaves, rows, bytes) and"
                            " deletes nothing")
    prune.add_argument("--dry-run", action="store_true", help="say what would be deleted, delete nothing"
                                                              " (the default; wins over --yes)")
    erase = sub.add_parser("erase", help="erase one member's salts and records (GDPR); the log stays verifiable")
    common(erase)
    erase.add_argument("--meter", required=True, help="the member whose records go; it cannot be undone")
    erase.add_argument("--yes", action="store_true",
                       help="do not ask: without it a terminal is asked to type the meter id, anything else refused")


class _Ctx:
    def __init__(self, args: argparse.Namespace) -> None:
        from gateway import config  # noqa: PLC0415
        from gateway.ledger import verify  # noqa: PLC0415

        self.cfg = config.load(args.config) if args.config else None
        path = args.db or (self.cfg.db if self.cfg else "gateway.db")
        # Only erasure, pruning and archiving (its `archives` row) write; every other command reads,
        # so an auditor's copy is never changed.
        self.conn = open_database(path, writable=args.ledger_command in ("erase", "prune", "archive"))
        self.key_path = self.cfg.key_path if self.cfg else Path(f"{path}.ledger-key.pem")
        self.args = args

    def origin(self, notes: Sequence[bytes] = ()) -> str:
        if self.args.origin:
            return str(self.args.origin)
        if self.cfg:
            return self.cfg.origin
        import sqlite3  # noqa: PLC0415

        try:
            row = self.conn.execute("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        except sqlite3.DatabaseError:
            row = None  # verify says what is wrong with the file
        for signed in ([row[0]] if row else []) + list(notes):
            first = (signed if isinstance(signed, bytes) else str(signed).encode()).split(b"\n", 1)[0]
            if first:
                return first.decode("utf-8", "replace")
        if self.args.ledger_command == "verify":
            return ""
        raise UsageError("no checkpoint yet and no --origin")

    def public_key(self) -> Any:
        from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: PLC0415

        path = Path(self.args.pubkey) if self.args.pubkey else self.key_path
        if not path.is_file():
            raise UsageError(f"no key file {path}" if self.args.pubkey else f"no --pubkey and no key file {path}")
        try:
            data = path.read_bytes()
            key = (serialization.load_pem_public_key(data) if self.args.pubkey
                   else serialization.load_pem_private_key(data, None).public_key())
        except (ValueError, TypeError, OSError) as exc:
            raise UsageError(f"{path} is not a PEM {'public' if self.args.pubkey else 'private'} key ({exc})") from None
        if not isinstance(key, Ed25519PublicKey):
            raise UsageError(f"{path} is not an Ed25519 key")
        return key

    def checkpoint(self, size: int | None) -> tuple[int, bytes, bytes]:
        sql = "SELECT size, root, note FROM checkpoints "
        row = self.conn.execute(sql + ("WHERE size=?" if size is not None else "ORDER BY size DESC LIMIT 1"),
                                (size,) if size is not None else ()).fetchone()
        if row is None:
            sizes = [r[0] for r in self.conn.execute("SELECT size FROM checkpoints ORDER BY size DESC LIMIT 5")]
            known = f" (latest sizes: {', '.join(map(str, sizes))})" if sizes else ""
            raise UsageError(f"no checkpoint{'' if size is None else f' of size {size}'}{known}")
        return row[0], bytes(row[1]), bytes(row[2])


def run(args: argparse.Namespace) -> int:
    import sqlite3  # noqa: PLC0415

    from gateway.config import ConfigError  # noqa: PLC0415
    from gateway.ledger import note  # noqa: PLC0415

    if args.ledger_command == "check-proof":  # offline: opens no database
        return _check_proof(args)
    try:
        ctx = _Ctx(args)
        return {"verify": _verify, "prove": _prove, "export-checkpoint": _export, "export-readings": _export_readings,
                "consistency": _consistency, "erase": _erase, "archive": _archive,
                "prune": _prune}[args.ledger_command](ctx)
    except (UsageError, note.NoteError, sqlite3.DatabaseError, OSError) as exc:
        # verify answers a broken database with a verdict; the other commands need a sound one.
        print(f"tmeter ledger {args.ledger_command}: {one_line(exc)}", file=sys.stderr)
        return 2
    except ConfigError:
        raise  # the CLI answers a bad config in its one line (tmeter/cli.py)
    except (TypeError, ValueError) as exc:  # a cell of a type the gateway never writes
        print(f"tmeter ledger {args.ledger_command}: the database holds what the gateway never writes"
              f" ({one_line(exc)}); `tmeter ledger verify` names it", file=sys.stderr)
        return 2


def _verify(ctx: _Ctx) -> int:
    from gateway.ledger import verify  # noqa: PLC0415

    notes = []
    for name in ctx.args.checkpoint:
        try:
            notes.append(Path(name).read_bytes())
        except OSError as exc:
            raise UsageError(f"cannot read checkpoint note {name} ({exc.strerror})") from None
    origin, key = ctx.origin(notes), ctx.public_key()
    if ctx.args.since:
        return _verify_since(ctx, origin, key, notes)
    report = verify.Report()
    given = verify.given_checkpoints(notes, origin, key, report)
    result = verify.verify(ctx.conn, origin, key, given)
    for problem in report.problems + result.problems:
        print(f"FAIL: {problem}")
    for line in result.witnesses:
        print(line)
    kept = f" from leaf {result.pruned} (the leaves before it archived and pruned)" if result.pruned else ""
    summary = (f"{result.leaves} leaves{kept} ({result.erased} erased), {result.checkpoints} checkpoints,"
               f" {result.unsigned_tail} leaves after the latest checkpoint, {len(given)} given checkpoints,"
               f" {len(result.witnesses)} witnesses")
    ok = report.ok and result.ok
    print(("ledger OK: " if ok else "ledger FAILED: ") + summary)
    return 0 if ok else 1


def _verify_since(ctx: _Ctx, origin: str, key: Any, notes: list[bytes]) -> int:
    from gateway.ledger import verify  # noqa: PLC0415

    if notes:
        raise UsageError("--since and --checkpoint: give the newest note you hold as --since")
    try:
        since = Path(ctx.args.since).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read checkpoint note {ctx.args.since} ({exc.strerror})") from None
    result = verify.verify_since(ctx.conn, origin, key, since)
    for problem in result.problems:
        print(f"FAIL: {problem}")
    if result.rehashed_prefix:
        print(f"note: no frontier stored for size {result.since} (a database from before frontiers):"
              " its leaves were hashed again")
    summary = (f"{result.leaves} leaves after the checkpoint at size {result.since}, {result.checkpoints}"
               f" checkpoints after it, {result.unsigned_tail} leaves after the latest checkpoint")
    print(("ledger OK since the note: " if result.ok else "ledger FAILED since the note: ") + summary)
    return 0 if result.ok else 1


def _archive(ctx: _Ctx) -> int:
    from gateway.ledger import archive, retention  # noqa: PLC0415

    try:
        period = archive.export(ctx.conn, ctx.args.first, ctx.args.last, Path(ctx.args.out))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    row = retention.record(ctx.conn, period)
    print(f"archived leaves {period.start}..{period.last - 1} (checkpoints {period.first}..{period.last}) to"
          f" {period.path}, SHA-256 {row.sha256} (recorded for `ledger prune --before`)")
    check = f"--since START.note (the checkpoint of size {period.first}, kept since)" if period.first else ""
    print(f"verify later: tmeter ledger verify --db {period.path} --pubkey PUB.pem --origin {ctx.origin()} {check}")
    return 0


def _prune(ctx: _Ctx) -> int:
    import time  # noqa: PLC0415

    from gateway.config import IngestConfig  # noqa: PLC0415
    from gateway.ledger import note, retention  # noqa: PLC0415
    from gateway.ledger.tlog import Ledger  # noqa: PLC0415

    if not ctx.key_path.is_file():  # the prune leaf is signed with the gateway's key, never a new one
        raise UsageError(f"no ledger key {ctx.key_path}: pruning signs a checkpoint with the gateway's key")
    now = time.time()
    window = (ctx.cfg.ingest if ctx.cfg else IngestConfig()).settlement_window_s
    ledger = Ledger(ctx.conn, ctx.origin(), note.load_or_create_signing_key(ctx.key_path))
    try:
        if ctx.args.archive:
            return _prune_archive(ctx, ledger, retention.window_guard(now, window))
        plan = retention.plan(ctx.conn, retention.resolve(ctx.conn, ctx.args.before, now), now, window)
        print(_plan_text(plan))
        if ctx.args.dry_run or not ctx.args.yes:
            print("dry run: nothing deleted; run again with --yes to prune")
            return 0
        done = retention.execute(ledger, plan, ctx.public_key(), now, window)
    except ValueError as exc:
        raise UsageError(f"nothing pruned: {exc}") from None
    print(f"pruned {done.removed} leaves in {done.prune_s:.1f} s (the log now keeps leaves {plan.cut} on);"
          f" VACUUM {done.vacuum_s:.1f} s: {done.before:,} -> {done.after:,} bytes; verify the rest from"
          f" the checkpoint at size {plan.bound}, kept with its note")
    return 0


def _plan_text(plan: Any) -> str:
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(plan.kinds.items()))
    files = "; ".join(f"{a.path} (checkpoints {a.first}..{a.last}, through {t})" for a, t in plan.steps)
    return (f"prune through checkpoint {plan.bound}: leaves {plan.base}..{plan.cut - 1} ({kinds}), {plan.rows} rows,"
            f" {plan.intervals} settled intervals, about {plan.estimate:,} of the file's {plan.file_bytes:,} bytes;"
            f" held by {files}")


def _prune_archive(ctx: _Ctx, ledger: Any, guard: Any) -> int:
    from gateway.ledger import archive  # noqa: PLC0415

    if ctx.args.dry_run or not ctx.args.yes:
        print(f"dry run: would prune the period of {ctx.args.archive} after verifying it; nothing deleted;"
              " run again with --yes to prune")
        return 0
    done = archive.prune(ledger, Path(ctx.args.archive), ctx.public_key(), guard=guard)
    ctx.conn.execute("VACUUM")
    print(f"pruned {done.removed} leaves (the log now keeps leaves {done.cut} on); verify the rest from the"
          f" checkpoint at size {done.through}, kept with its note; the archive {ctx.args.archive} holds the period")
    return 0


def _prove(ctx: _Ctx) -> int:
    from gateway.ledger import note, verify  # noqa: PLC0415

    size, root, signed = ctx.checkpoint(None)
    note.open_checkpoint(signed, ctx.origin(), ctx.public_key())
    idxs = [r[0] for r in ctx.conn.execute("SELECT idx FROM leaves WHERE meter=? AND iv=? AND idx < ? ORDER BY idx",
                                           (ctx.args.meter, ctx.args.interval, size))]
    if not idxs:
        from gateway.ledger import retention  # noqa: PLC0415

        held = retention.where_pruned(ctx.conn, ctx.args.interval)
        if held is not None:
            print(f"pruned: the records of interval {ctx.args.interval} left this database; they are in archive"
                  f" {held.path} (checkpoints {held.first}..{held.last}, SHA-256 {held.sha256[:16]}...): tmeter"
                  f" ledger prove --db {held.path} --meter {ctx.args.meter} --interval {ctx.args.interval}",
                  file=sys.stderr)
            return 1
        print(f"no records of {ctx.args.meter} for interval {ctx.args.interval} under the latest checkpoint"
              f" (size {size})", file=sys.stderr)
        return 1
    proofs = [verify.prove_leaf(ctx.conn, i, size) for i in idxs]
    ok = all(verify.check_inclusion(p, root) for p in proofs)
    print(json.dumps({"checkpoint": signed.decode(), "proofs": [p.to_dict() for p in proofs], "verified": ok},
                     indent=1))
    return 0 if ok else 1


def _export_readings(ctx: _Ctx) -> int:
    from gateway.ledger import readings_export  # noqa: PLC0415

    args = ctx.args
    try:
        done = readings_export.export(ctx.conn, args.meter, Path(args.out), args.from_iv, args.to_iv)
    except readings_export.ExportError as exc:
        raise UsageError(str(exc)) from None
    skipped = f"; {done.unsigned} unsigned reading(s) left out" if done.unsigned else ""
    print(f"exported {done.signed} signed reading(s) of {args.meter} to {args.out} (keys"
          f" {', '.join(map(str, done.keys)) or 'none'}){skipped}; check one with: openssl dgst -sha256 -verify"
          f" {args.out}/meter-<skid>.pem -signature {args.out}/<iv>-<boot>-<seq>.sig {args.out}/<iv>-<boot>-<seq>.json")
    return 0


def _check_proof(args: argparse.Namespace) -> int:
    from gateway.ledger import proofcheck  # noqa: PLC0415

    try:
        proofs = proofcheck.load_proofs(_read(args.proof, "proof"))
        signed = proofcheck.read_note(_read(args.checkpoint, "checkpoint note"))
        origin = args.origin or proofcheck.note_origin(signed)
        key = _public_key(Path(args.pubkey))
        meter_keys = [proofcheck.load_meter_key(_read(name, "meter key")) for name in args.meter_key]
    except (UsageError, proofcheck.ProofFileError) as exc:
        print(f"tmeter ledger check-proof: {one_line(exc)}", file=sys.stderr)
        return 2
    verdict = proofcheck.check(proofs, signed, origin, key, meter_keys)
    for line in verdict.lines:
        print(line)
    print(f"proof {'OK' if verdict.ok else 'FAILED'}: {len(proofs)} records checked against {args.checkpoint}"
          f" and {args.pubkey}, origin {origin}")
    return 0 if verdict.ok else 1


def _read(name: str, what: str) -> bytes:
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {name} ({exc.strerror})") from None


def _public_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: PLC0415

    try:
        key = serialization.load_pem_public_key(_read(str(path), "public key"))
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path} is not a PEM public key ({one_line(exc)})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{path} is not an Ed25519 key")
    return key


def _export(ctx: _Ctx) -> int:
    from gateway.ledger import note  # noqa: PLC0415

    origin, key = ctx.origin(), ctx.public_key()
    _, _, signed = ctx.checkpoint(ctx.args.size)
    text = note.verify(signed, origin, key)
    out = Path(ctx.args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoint.note").write_bytes(signed)
    (out / "body").write_bytes(text)
    (out / "sig").write_bytes(note.signature_bytes(signed, origin))
    (out / "pub.pem").write_bytes(note.public_pem(key))
    (out / "vkey").write_text(note.verifier_key(origin, key) + "\n")
    print(f"wrote {out}/checkpoint.note, body, sig, pub.pem, vkey; check with:\n"
          f"  openssl pkeyutl -verify -pubin -inkey {out}/pub.pem -rawin -in {out}/body -sigfile {out}/sig")
    return 0


def _consistency(ctx: _Ctx) -> int:
    from gateway.ledger import merkle, note, verify  # noqa: PLC0415

    origin, key = ctx.origin(), ctx.public_key()
    if ctx.args.new is not None and ctx.args.old > ctx.args.new:
        raise UsageError(f"--old {ctx.args.old} is larger than --new {ctx.args.new}: a log only grows")
    old = note.open_checkpoint(ctx.checkpoint(ctx.args.old)[2], origin, key)
    new = note.open_checkpoint(ctx.checkpoint(ctx.args.new)[2], origin, key)
    if old.size > new.size:
        raise UsageError(f"--old {old.size} is larger than the latest checkpoint {new.size}: a log only grows")
    try:
        proof = verify.consistency(ctx.conn, old.size, new.size)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    ok = merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
    print(json.dumps({"old": {"size": old.size, "root": old.root_b64}, "new": {"size": new.size, "root": new.root_b64},
                      "proof": [h.hex() for h in proof], "verified": ok}, indent=1))
    return 0 if ok else 1


def _erase(ctx: _Ctx) -> int:
    from gateway.ledger import note  # noqa: PLC0415
    from gateway.ledger.tlog import Ledger  # noqa: PLC0415

    if not ctx.key_path.is_file():  # never a new key: its checkpoints would start a second ledger
        raise UsageError(f"no ledger key {ctx.key_path}: erasing signs a checkpoint with the gateway's key")
    meter = ctx.args.meter
    leaves = ctx.conn.execute("SELECT COUNT(*) FROM leaves WHERE meter=? AND erased=0", (meter,)).fetchone()[0]
    known = ctx.conn.execute("SELECT 1 FROM meters WHERE meter=?", (meter,)).fetchone() is not None
    if not known and not leaves:
        raise UsageError(f"no meter {meter!r} in the registry or the ledger: nothing to erase")
    if not ctx.args.yes and not _confirmed(meter, leaves):
        raise UsageError(f"not erased: erasing {leaves} leaves of {meter} cannot be undone; confirm with --yes")
    ledger = Ledger(ctx.conn, ctx.origin(), note.load_or_create_signing_key(ctx.key_path))
    n = ledger.erase(meter)
    cp, _ = ledger.checkpoint()
    print(f"erased {n} leaves of {ctx.args.meter}; new checkpoint at size {cp.size}")
    return 0


def _confirmed(meter: str, leaves: int) -> bool:
    """A person at a terminal types the meter id; a script must say --yes."""
    if not sys.stdin.isatty():
        return False
    print(f"erase {leaves} leaves of {meter} (salts and records; this cannot be undone)? type {meter!r}: ",
          end="", flush=True)
    return sys.stdin.readline().strip() == meter
