"""A meter's signed readings for third parties: `tmeter ledger export-readings` (issue 15).

Each reading the meter signed (protocols/signature.py) is written as the exact body bytes the
signature covers, ``<iv>-<boot>-<seq>.json``, and its signature in DER, ``<...>.sig``, with the
meter's public keys as PEM, ``meter-<skid>.pem``, so that standard tools check them against the
meter's key alone, whatever the gateway says::

    openssl dgst -sha256 -verify meter-1.pem -signature 1996099-1-96.sig 1996099-1-96.json

``readings.json`` indexes them in an OCMF-like shape (gateway/README.md documents it): per
reading the body text, the skid and a signature object (``SA`` algorithm, ``SE`` encoding,
``SD`` r || s in hex), and the public keys. Unsigned readings (a meter before its enrolment)
are left out and counted: nothing but the gateway vouches for them.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway import meterkeys
from gateway.ledger import records, tlog
from protocols import topics
from protocols.errors import ProtocolError

FORMAT = "tmeter-signed-readings/1"
INDEX = "readings.json"


class ExportError(ValueError):
    """An export that cannot be made (one line for the operator)."""


@dataclass(frozen=True)
class Exported:
    signed: int
    unsigned: int
    keys: list[int]


@dataclass(frozen=True)
class _Reading:
    iv: int
    boot: int
    seq: int
    body: bytes
    skid: int
    sig: bytes

    @property
    def name(self) -> str:
        return f"{self.iv}-{self.boot}-{self.seq}"


def export(conn: sqlite3.Connection, meter: str, out: Path, first_iv: int | None = None,
           last_iv: int | None = None) -> Exported:
    """Write ``meter``'s signed readings of intervals first_iv..last_iv (default: all) to ``out``
    (a new or empty folder)."""
    if not topics.valid_id(meter):
        raise ExportError("a meter id is 1-32 of [A-Za-z0-9_-]")
    if first_iv is not None and last_iv is not None and first_iv > last_iv:
        raise ExportError(f"--from {first_iv} is after --to {last_iv}")
    signed, unsigned = _readings(conn, meter, first_iv, last_iv)
    pubs = _public_keys(conn, meter, {r.skid for r in signed})
    _folder(out)
    for r in signed:
        (out / f"{r.name}.json").write_bytes(r.body)
        (out / f"{r.name}.sig").write_bytes(meterkeys.der_of(r.sig))
    for skid, pub in pubs.items():
        (out / f"meter-{skid}.pem").write_bytes(meterkeys.pem_of(pub))
    (out / INDEX).write_text(json.dumps(_index(meter, signed, pubs), indent=1) + "\n")
    return Exported(len(signed), unsigned, sorted(pubs))


def _readings(conn: sqlite3.Connection, meter: str, first_iv: int | None,
              last_iv: int | None) -> tuple[list[_Reading], int]:
    lo, hi = -1 if first_iv is None else first_iv, (1 << 62) if last_iv is None else last_iv
    try:
        rows = conn.execute(
            "SELECT r.iv, r.boot, r.seq, o.record, o.sig FROM readings r JOIN openings o ON o.idx = r.leaf"
            " WHERE r.meter=? AND r.iv BETWEEN ? AND ? ORDER BY r.iv, r.boot, r.seq", (meter, lo, hi)).fetchall()
    except sqlite3.OperationalError as exc:  # a database from before signatures has no openings.sig
        raise ExportError(f"this database holds no meter signatures ({exc})") from None
    signed, unsigned = [], 0
    for iv, boot, seq, record, sig in rows:
        if sig is None:
            unsigned += 1
            continue
        try:
            skid, raw = tlog.parse_signature_line(str(sig))
            body = records.unpack(bytes(record))
        except (ProtocolError, records.RecordError) as exc:
            raise ExportError(f"reading {meter}/{boot}/{seq}: stored signature or record is malformed ({exc})") from None
        signed.append(_Reading(iv, boot, seq, body, skid, raw))
    return signed, unsigned


def _public_keys(conn: sqlite3.Connection, meter: str, skids: set[int]) -> dict[int, bytes]:
    """The meter's public keys the readings name, retired ones included (older readings)."""
    try:
        rows = dict(conn.execute("SELECT skid, pub FROM meter_signing_keys WHERE meter=?", (meter,)).fetchall())
    except sqlite3.OperationalError:
        rows = {}
    missing = sorted(skids - rows.keys())
    if missing:
        raise ExportError(f"no public key {', '.join(map(str, missing))} of {meter} in this database (an archive"
                          " holds no keys: export from the gateway's database)")
    return {skid: bytes(rows[skid]) for skid in sorted(skids)}


def _folder(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        if any(out.iterdir()):
            raise ExportError(f"{out} is not empty: an export goes to a folder of its own")
    except OSError as exc:
        raise ExportError(f"cannot use {out} ({exc.strerror})") from None


def _index(meter: str, signed: list[_Reading], pubs: dict[int, bytes]) -> dict[str, Any]:
    return {
        "format": FORMAT, "meter": meter,
        "public_keys": [{"skid": skid, "file": f"meter-{skid}.pem", "pem": meterkeys.pem_of(pub).decode(),
                         "point": pub.hex(), "fingerprint": meterkeys.fingerprint(pub)}
                        for skid, pub in pubs.items()],
        "readings": [{"file": f"{r.name}.json", "sig_file": f"{r.name}.sig", "skid": r.skid, "body": r.body.decode(),
                      "encoding": "canonical JSON, ASCII: the exact bytes signed",
                      "signature": {"SA": meterkeys.ALGORITHM, "SE": "hex", "SD": r.sig.hex()}}
                     for r in signed],
    }
