"""What the ledger keeps of a meter's signature and who can check it (issue 15): `ledger prove`
carries it, `ledger check-proof --meter-key` checks it against the meter's public key alone,
`ledger export-readings` writes it for openssl; archives and erasure take it with the opening.

The forgery test is the issue's acceptance: everything in the gateway's database (HMAC keys,
salts, the registry) does not make a reading the meter's key verifies."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.ledger import archive
from gateway.ledger.tlog import signature_line
from gateway.registry import Registry
from protocols import trailer
from tests.gateway.conftest import INTERVAL_S, Offline, provision
from tests.gateway.signing import Signer, enrol, line, resign, signed_reading

ROOT = Path(__file__).parents[2]
D = 0x5EED_0F_7E57_3E7E12  # the meter's private key: in this test it stands for the device
FRESH = 0xBAD_C0DE_0BAD_C0DE  # a key pair anyone can make
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl binary")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tmeter", *args], capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def openssl_verify(pem: Path, sig: Path, body: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", "dgst", "-sha256", "-verify", str(pem), "-signature", str(sig), str(body)],
                          capture_output=True, text=True, timeout=30)


class World:
    """A gateway with one enrolled meter that sent one genuine signed reading."""

    def __init__(self, off: Offline, tmp: Path) -> None:
        self.off, self.tmp = off, tmp
        self.spec = provision(off.cfg, 1)[0]
        self.signer = enrol(Registry(conn=off.conn), self.spec.meter, D)
        self.iv = int(off.clock.t) // INTERVAL_S
        self.topic, payload, self.body = signed_reading(self.spec, self.signer, self.iv, INTERVAL_S)
        assert len(off.send((self.topic, payload))) == 1 and off.counters["stored"] == 1
        self.payload = payload
        out = cli("ledger", "export-readings", "--db", off.cfg.db, self.spec.meter, "--out", str(tmp / "exp"))
        assert out.returncode == 0, out.stderr
        self.export = tmp / "exp"
        self.pem = self.export / "meter-1.pem"

    def prove(self, name: str) -> Path:
        self.off.ledger.checkpoint()
        out = cli("ledger", "prove", "--db", self.off.cfg.db, "--meter", self.spec.meter, "--interval", str(self.iv))
        assert out.returncode == 0, out.stderr
        path = self.tmp / name
        path.write_text(out.stdout)
        note = self.tmp / f"{name}.cp"
        assert cli("ledger", "export-checkpoint", "--db", self.off.cfg.db, "--out", str(note)).returncode == 0
        return path

    def check(self, proof: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return cli("ledger", "check-proof", "--proof", str(proof), "--checkpoint", f"{proof}.cp/checkpoint.note",
                   "--pubkey", f"{proof}.cp/pub.pem", *extra)


@pytest.fixture
def world(offline: Offline, tmp_path: Path) -> World:
    return World(offline, tmp_path)


def test_prove_carries_the_signature_and_check_proof_checks_it(world: World, tmp_path: Path) -> None:
    proof = world.prove("proof.json")
    (item,) = json.loads(proof.read_text())["proofs"]
    assert item["record"] == world.body.decode()
    assert item["signature"] == {"skid": 1, "sig": world.signer.sign(world.body).hex(), "alg": "ECDSA-secp256r1-SHA256"}
    plain = world.check(proof)
    assert plain.returncode == 0 and "meter signatures NOT checked" in plain.stdout
    out = world.check(proof, "--meter-key", str(world.pem))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "signed by the meter's key sha256:" in out.stdout and "NOT checked" not in out.stdout
    other = tmp_path / "other.pem"
    other.write_bytes(__import__("gateway.meterkeys").meterkeys.pem_of(Signer(FRESH, 1).pub))
    bad = world.check(proof, "--meter-key", str(other))
    assert bad.returncode == 1 and "does not verify under the meter's key" in bad.stdout
    # A replaced board: the old and the new key together.
    assert world.check(proof, "--meter-key", str(other), "--meter-key", str(world.pem)).returncode == 0


@pytest.mark.parametrize("change, reason", [
    (lambda s: s.pop("signature"), "carries no meter signature"),
    (lambda s: s["signature"].update(sig="00" * 64), "does not verify"),
])
def test_check_proof_with_meter_key_fails_a_proof_without_a_good_signature(world: World, change, reason) -> None:  # noqa: ANN001
    proof = world.prove("proof.json")
    doc = json.loads(proof.read_text())
    change(doc["proofs"][0])
    proof.write_text(json.dumps(doc))
    out = world.check(proof, "--meter-key", str(world.pem))
    assert out.returncode == 1 and reason in out.stdout, out.stdout


@pytest.mark.parametrize("signature, msg", [
    ("x", "signature is not an object"), ({"skid": "1", "sig": "00"}, "integer skid"),
    ({"skid": 1, "sig": "zz"}, "is not hex"), ({"skid": 1, "sig": "00" * 63}, "63 bytes, not 64"),
    ({"skid": 1, "sig": "00" * 64, "alg": "RSA"}, "is not ECDSA-secp256r1-SHA256"),
])
def test_malformed_signatures_in_a_proof_file_are_one_line(world: World, signature: object, msg: str) -> None:
    proof = world.prove("proof.json")
    doc = json.loads(proof.read_text())
    doc["proofs"][0]["signature"] = signature
    proof.write_text(json.dumps(doc))
    out = world.check(proof)
    assert out.returncode == 2 and msg in out.stderr and out.stderr.count("\n") == 1, out.stderr


def test_a_meter_key_that_is_no_p256_pem_is_one_line(world: World, tmp_path: Path) -> None:
    proof = world.prove("proof.json")
    for name, data in (("junk.pem", b"junk"), ("ed.pem", Path(f"{proof}.cp/pub.pem").read_bytes())):
        (tmp_path / name).write_bytes(data)
        out = world.check(proof, "--meter-key", str(tmp_path / name))
        assert out.returncode == 2 and "meter key:" in out.stderr and out.stderr.count("\n") == 1, out.stderr
    out = world.check(proof, "--meter-key", str(tmp_path / "absent.pem"))
    assert out.returncode == 2 and "cannot read meter key" in out.stderr


@needs_openssl
def test_export_verifies_with_openssl_and_a_tampered_body_fails(world: World) -> None:
    name = f"{world.iv}-{world.spec.boot}-{world.spec.seq}"
    body, sig = world.export / f"{name}.json", world.export / f"{name}.sig"
    assert body.read_bytes() == world.body
    out = openssl_verify(world.pem, sig, body)
    assert out.returncode == 0 and "Verified OK" in out.stdout, out.stdout + out.stderr
    body.write_bytes(world.body.replace(b'"imp_wh":100', b'"imp_wh":900'))
    out = openssl_verify(world.pem, sig, body)
    assert out.returncode != 0 and "verification failure" in out.stdout.lower()
    index = json.loads((world.export / "readings.json").read_text())
    assert index["format"] == "tmeter-signed-readings/1" and index["meter"] == world.spec.meter
    (entry,) = index["readings"]
    assert entry["body"] == world.body.decode() and entry["skid"] == 1
    assert entry["signature"] == {"SA": "ECDSA-secp256r1-SHA256", "SE": "hex", "SD": world.signer.sign(world.body).hex()}
    assert index["public_keys"][0]["pem"] == world.pem.read_text()


def test_export_readings_input_errors_are_one_line(world: World, tmp_path: Path) -> None:
    db = world.off.cfg.db
    for args, msg in ((["bad/id", "--out", str(tmp_path / "a")], "a meter id is"),
                      (["m000", "--out", str(world.export)], "is not empty"),
                      (["m000", "--out", str(tmp_path / "b"), "--from", "9", "--to", "3"], "is after --to")):
        out = cli("ledger", "export-readings", "--db", db, *args)
        assert out.returncode == 2 and msg in out.stderr and out.stderr.count("\n") == 1, out.stderr
    out = cli("ledger", "export-readings", "--db", db, "m000", "--out", str(tmp_path / "c"), "--to", str(world.iv - 1))
    assert out.returncode == 0 and "exported 0 signed" in out.stdout


def test_archive_carries_the_signature_and_erasure_removes_it(world: World, tmp_path: Path) -> None:
    world.off.ledger.checkpoint()
    size = world.off.ledger.size
    archive.export(world.off.conn, 0, size, tmp_path / "a.db")
    from gateway import db
    from gateway.ledger import verify

    arch = db.connect_readonly(tmp_path / "a.db")
    leaf, sig = arch.execute("SELECT idx, sig FROM openings WHERE sig IS NOT NULL").fetchone()
    assert sig == signature_line(1, world.signer.sign(world.body))
    assert verify.prove_leaf(arch, leaf, size).signature == (1, world.signer.sign(world.body))
    world.off.ledger.erase(world.spec.meter)
    assert world.off.conn.execute("SELECT COUNT(*) FROM openings WHERE sig IS NOT NULL").fetchone()[0] == 0


# --- the forgery test (issue 15's acceptance)

@needs_openssl
def test_the_gateway_cannot_forge_a_reading_the_meter_key_verifies(world: World, tmp_path: Path) -> None:
    off, spec = world.off, world.spec
    assert openssl_verify(world.pem, *sorted(world.export.glob("*.sig")), *sorted(world.export.glob("*-*.json")))\
        .returncode == 0  # the genuine reading, signed on the "device"
    # Everything the gateway holds: the meter's HMAC key, its registry rows, the ledger's salts.
    reg = Registry(conn=off.conn)
    hmac_kid, hmac_key = reg.current_key(spec.meter)
    assert (hmac_kid, hmac_key) == (spec.kid, spec.key) and reg.signing_key(spec.meter, 1) == world.signer.pub
    topic, payload, body = signed_reading(spec, world.signer, world.iv, INTERVAL_S, imp_wh=5)  # the next reading
    forged_body = body.replace(b'"imp_wh":5', b'"imp_wh":500').replace(
        b'"cnt_imp_wh":%d' % spec.counter_imp, b'"cnt_imp_wh":%d' % (spec.counter_imp + 495))
    assert forged_body != body
    forgeries = {
        "bad_signature": resign(trailer.encode(forged_body, spec.kid, hmac_key), hmac_key,
                                line(1, Signer(FRESH, 1).sign(forged_body))),  # a fresh P-256 key
        "unsigned": resign(trailer.encode(forged_body, spec.kid, hmac_key), hmac_key, None),  # the line dropped
        "unknown_key": resign(trailer.encode(forged_body, spec.kid, hmac_key), hmac_key,
                              line(2, Signer(FRESH, 2).sign(forged_body))),  # a key id the registry lacks
    }
    replayed = resign(trailer.encode(forged_body, spec.kid, hmac_key), hmac_key,
                      line(1, world.signer.sign(world.body)))  # one of the meter's real signatures
    leaves = off.conn.execute("SELECT COUNT(*) FROM leaves").fetchone()[0]
    for code, forged in forgeries.items():
        before = off.counters[code]
        assert off.send((topic, forged)) == [] and off.counters[code] == before + 1, code
    before = off.counters["bad_signature"]
    assert off.send((topic, replayed)) == [] and off.counters["bad_signature"] == before + 1
    assert off.conn.execute("SELECT COUNT(*) FROM leaves").fetchone()[0] == leaves  # (a): nothing stored
    assert off.conn.execute("SELECT COUNT(*) FROM readings").fetchone()[0] == 1

    # (b): a gateway that skips its own ingest and writes the forgery into its ledger itself
    # (signed with a fresh key, the most it can do) is caught by whoever holds the meter's key.
    with off.ledger.transaction():
        leaf = off.ledger.append("reading", spec.meter, world.iv, forged_body,
                                 signature_line(1, Signer(FRESH, 1).sign(forged_body)))
        off.conn.execute("INSERT INTO readings(meter, boot, seq, iv, imp_wh, exp_wh, cnt_imp_wh, cnt_exp_wh, flags,"
                         " leaf, received) VALUES (?,?,?,?,500,20,?,?,0,?,0)",
                         (spec.meter, spec.boot, spec.seq, world.iv, spec.counter_imp + 495, spec.counter_exp, leaf))
    proof = world.prove("forged.json")
    out = world.check(proof, "--meter-key", str(world.pem))
    assert out.returncode == 1 and "proof FAILED" in out.stdout
    assert out.stdout.count("signed by the meter's key") == 1  # the genuine one, and only it
    assert "does not verify under the meter's key" in out.stdout
    assert world.check(proof).returncode == 0  # the log itself is consistent: the signature is the only witness
    exp = tmp_path / "exp2"
    assert cli("ledger", "export-readings", "--db", off.cfg.db, spec.meter, "--out", str(exp)).returncode == 0
    name = f"{world.iv}-{spec.boot}-{spec.seq}"
    out = openssl_verify(exp / "meter-1.pem", exp / f"{name}.sig", exp / f"{name}.json")
    assert out.returncode != 0 and "verification failure" in out.stdout.lower()
