"""`tmeter ledger verify|prove|export-checkpoint|consistency|erase`: the ledger for auditors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ledger_command", metavar="ACTION", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", help="gateway.toml (database, origin, key file)")
        p.add_argument("--db", help="gateway database (overrides --config)")
        p.add_argument("--pubkey", help="the ledger's Ed25519 public key (PEM); default: from the key file")
        p.add_argument("--origin", help="checkpoint origin (default: from --config, else the database)")

    common(sub.add_parser("verify", help="check the whole log; names what failed"))
    prove = sub.add_parser("prove", help="inclusion proofs of a meter's records in one interval")
    common(prove)
    prove.add_argument("--meter", required=True)
    prove.add_argument("--interval", type=int, required=True)
    export = sub.add_parser("export-checkpoint", help="write note, body, sig and pub.pem for openssl")
    common(export)
    export.add_argument("--out", required=True)
    export.add_argument("--size", type=int, help="checkpoint tree size (default: the latest)")
    cons = sub.add_parser("consistency", help="consistency proof between two checkpoints")
    common(cons)
    cons.add_argument("--old", type=int, required=True, help="older checkpoint's tree size")
    cons.add_argument("--new", type=int, help="newer checkpoint's tree size (default: the latest)")
    erase = sub.add_parser("erase", help="erase one member's salts and records (GDPR); the log stays verifiable")
    common(erase)
    erase.add_argument("--meter", required=True)


class _Ctx:
    def __init__(self, args: argparse.Namespace) -> None:
        from gateway import config, db  # noqa: PLC0415

        self.cfg = config.load(args.config) if args.config else None
        path = args.db or (self.cfg.db if self.cfg else "gateway.db")
        if not Path(path).exists():
            raise SystemExit(f"tmeter ledger: no database {path}")
        self.conn = db.connect(path)
        self.key_path = self.cfg.key_path if self.cfg else Path(f"{path}.ledger-key.pem")
        self.args = args

    def origin(self) -> str:
        if self.args.origin:
            return str(self.args.origin)
        if self.cfg:
            return self.cfg.origin
        row = self.conn.execute("SELECT note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        if row is None:
            raise SystemExit("tmeter ledger: no checkpoint yet and no --origin")
        return bytes(row[0]).split(b"\n", 1)[0].decode()

    def public_key(self) -> Any:
        from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

        if self.args.pubkey:
            return serialization.load_pem_public_key(Path(self.args.pubkey).read_bytes())
        if not self.key_path.exists():
            raise SystemExit(f"tmeter ledger: no --pubkey and no key file {self.key_path}")
        return serialization.load_pem_private_key(self.key_path.read_bytes(), None).public_key()

    def checkpoint(self, size: int | None) -> tuple[int, bytes, bytes]:
        sql = "SELECT size, root, note FROM checkpoints "
        row = self.conn.execute(sql + ("WHERE size=?" if size is not None else "ORDER BY size DESC LIMIT 1"),
                                (size,) if size is not None else ()).fetchone()
        if row is None:
            raise SystemExit(f"tmeter ledger: no checkpoint{'' if size is None else f' of size {size}'}")
        return row[0], bytes(row[1]), bytes(row[2])


def run(args: argparse.Namespace) -> int:
    ctx = _Ctx(args)
    return {"verify": _verify, "prove": _prove, "export-checkpoint": _export,
            "consistency": _consistency, "erase": _erase}[args.ledger_command](ctx)


def _verify(ctx: _Ctx) -> int:
    from gateway.ledger import verify  # noqa: PLC0415

    report = verify.verify(ctx.conn, ctx.origin(), ctx.public_key())
    for problem in report.problems:
        print(f"FAIL: {problem}")
    summary = (f"{report.leaves} leaves ({report.erased} erased), {report.checkpoints} checkpoints,"
               f" {report.unsigned_tail} leaves after the latest checkpoint")
    print(("ledger OK: " if report.ok else "ledger FAILED: ") + summary)
    return 0 if report.ok else 1


def _prove(ctx: _Ctx) -> int:
    from gateway.ledger import note, verify  # noqa: PLC0415

    size, root, signed = ctx.checkpoint(None)
    note.open_checkpoint(signed, ctx.origin(), ctx.public_key())
    idxs = [r[0] for r in ctx.conn.execute("SELECT idx FROM leaves WHERE meter=? AND iv=? AND idx < ? ORDER BY idx",
                                           (ctx.args.meter, ctx.args.interval, size))]
    if not idxs:
        print(f"no records of {ctx.args.meter} for interval {ctx.args.interval} under the latest checkpoint"
              f" (size {size})", file=sys.stderr)
        return 1
    proofs = [verify.prove_leaf(ctx.conn, i, size) for i in idxs]
    ok = all(verify.check_inclusion(p, root) for p in proofs)
    print(json.dumps({"checkpoint": signed.decode(), "proofs": [p.to_dict() for p in proofs], "verified": ok},
                     indent=1))
    return 0 if ok else 1


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
    old = note.open_checkpoint(ctx.checkpoint(ctx.args.old)[2], origin, key)
    new = note.open_checkpoint(ctx.checkpoint(ctx.args.new)[2], origin, key)
    proof = verify.consistency(ctx.conn, old.size, new.size)
    ok = merkle.verify_consistency(old.size, new.size, old.root, new.root, proof)
    print(json.dumps({"old": {"size": old.size, "root": old.root_b64}, "new": {"size": new.size, "root": new.root_b64},
                      "proof": [h.hex() for h in proof], "verified": ok}, indent=1))
    return 0 if ok else 1


def _erase(ctx: _Ctx) -> int:
    from gateway.ledger import note  # noqa: PLC0415
    from gateway.ledger.tlog import Ledger  # noqa: PLC0415

    ledger = Ledger(ctx.conn, ctx.origin(), note.load_or_create_signing_key(ctx.key_path))
    n = ledger.erase(ctx.args.meter)
    cp, _ = ledger.checkpoint()
    print(f"erased {n} leaves of {ctx.args.meter}; new checkpoint at size {cp.size}")
    return 0
