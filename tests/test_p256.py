"""ECDSA P-256 (protocols/p256.py): the vectors, `cryptography` verifying our signatures and we
verifying its, the refusals, and signing under both MicroPython ports within a small heap."""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (decode_dss_signature,
                                                             encode_dss_signature)

from protocols import p256
from protocols.vectors import runner
from tests import p256_vectorgen
from tests.protocols_vectors import expected, run_cpython, run_upy
from tmeter.fwtools.build import mpy_cross
from tmeter.fwtools.runner import find_micropython, micropython_env

PATH = p256_vectorgen.OUT
DOC = runner.load(str(PATH))
N = p256_vectorgen.N
RFC_D = int(p256_vectorgen.RFC_D, 16)
# The smallest -X heapsize that signed on the 32-bit port (bench/p256.py: 16 KB), plus 2 KB.
HEAP = "18k"


def message(given: dict) -> bytes:
    return bytes.fromhex(given["msg_hex"]) if "msg_hex" in given else given["msg"].encode()


def their_key(pub: bytes) -> ec.EllipticCurvePublicKey:
    return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), pub)


def der(sig: bytes) -> bytes:
    return encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))


def test_the_vector_file_is_current() -> None:
    assert PATH.read_text() == p256_vectorgen.generate()


def test_vectors_cpython() -> None:
    for vector, want, have in zip(DOC["vectors"], expected(DOC), run_cpython(PATH), strict=True):
        assert have == want, vector["name"]


@pytest.mark.micropython
def test_vectors_micropython_32bit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The 64-bit port runs every vector file in tests/test_protocol_vectors.py; this is the
    # port whose integers have the ESP32's 32-bit words.
    monkeypatch.setenv("TMETER_MICROPYTHON_BITS", "32")
    got = run_upy(PATH, tmp_path)
    for vector, want, have in zip(DOC["vectors"], expected(DOC), got, strict=True):
        assert have == want, vector["name"]


def test_rfc6979_nonces_give_the_rfc_r() -> None:
    # The RFC's k is not visible through sign(); x(kG) mod n = r ties it to the signature.
    rfc = [v for v in DOC["vectors"] if "k" in v]
    assert len(rfc) == 2
    for v in rfc:
        x = int.from_bytes(p256.public_key(int(v["k"], 16))[1:33], "big")
        assert "%064x" % (x % N) == v["out"][:64]


def test_cryptography_verifies_every_signature_we_make() -> None:
    signs = [v for v in DOC["vectors"] if v["op"] == "sign" and isinstance(v["out"], str)]
    assert len(signs) >= 15
    for v in signs:
        d = int(v["in"]["d"], 16)
        sig = p256.sign(d, p256.sha256(message(v["in"])))
        their_key(p256.public_key(d)).verify(der(sig), message(v["in"]),
                                             ec.ECDSA(hashes.SHA256()))


def test_cryptography_refuses_our_signature_of_another_message() -> None:
    sig = p256.sign(RFC_D, p256.sha256(b"sample"))
    with pytest.raises(InvalidSignature):
        their_key(p256.public_key(RFC_D)).verify(der(sig), b"samplf", ec.ECDSA(hashes.SHA256()))


def test_we_verify_cryptographys_random_nonce_signatures() -> None:
    rng = random.Random(15)
    for i in range(12):
        key = ec.generate_private_key(ec.SECP256R1())
        msg = rng.randbytes(rng.randrange(0, 300))
        r, s = decode_dss_signature(key.sign(msg, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        pub = key.public_key().public_bytes(serialization.Encoding.X962,
                                            serialization.PublicFormat.UncompressedPoint)
        assert p256.public_key(key.private_numbers().private_value) == pub
        assert p256.verify(pub, p256.sha256(msg), sig)
        assert not p256.verify(pub, p256.sha256(msg + b"x"), sig)
        forged = sig[:40] + bytes([sig[40] ^ 1]) + sig[41:]
        assert not p256.verify(pub, p256.sha256(msg), forged)


def test_sign_steps_yields_none_in_many_steps_then_the_signature() -> None:
    h = p256.sha256(b"sample")
    steps = list(p256.sign_steps(RFC_D, h))
    assert steps[-1] == p256.sign(RFC_D, h) and len(steps[-1]) == 64
    assert all(s is None for s in steps[:-1]) and len(steps) > 300


def test_bad_arguments_raise_at_the_call_before_any_step() -> None:
    with pytest.raises(ValueError, match="p256: hash must be 32 bytes"):
        p256.sign_steps(RFC_D, b"\x00" * 31)
    for d in (0, -1, N, 2 ** 256, "1", 1.0, None):
        with pytest.raises(ValueError, match=r"p256: private key must be an int in \[1, n-1\]"):
            p256.sign(d, p256.sha256(b""))


def test_keypair_from_urandom_signs_and_verifies() -> None:
    d, pub = p256.keypair(os.urandom(32))
    assert 0 < d < N and pub == p256.public_key(d)
    h = p256.sha256(b"reading")
    assert p256.verify(pub, h, p256.sign(d, h))
    their_key(pub).verify(der(p256.sign(d, h)), b"reading", ec.ECDSA(hashes.SHA256()))


def test_every_module_compiles_for_the_esp32(tmp_path: Path) -> None:
    mpy_cross(Path("protocols/p256.py"), tmp_path / "p256.mpy", "xtensawin")
    assert (tmp_path / "p256.mpy").stat().st_size > 1000


def sign_in_heap(tmp_path: Path, heap: str) -> subprocess.CompletedProcess[str]:
    """Signs the RFC's "sample" under the 32-bit port in ``heap``, protocols/ as bytecode."""
    for rel in p256_vectorgen.MODULES:
        mpy_cross(Path(rel), tmp_path / "lib" / Path(rel).with_suffix(".mpy"), None)
    script = tmp_path / "sign.py"
    script.write_text("import gc\nfrom protocols import p256\ngc.collect()\n"
                      "print(p256.sign(%d, p256.sha256(b'sample')).hex())\n" % RFC_D)
    env = micropython_env()
    env["MICROPYPATH"] = ".frozen:" + str(tmp_path / "lib")
    return subprocess.run([find_micropython(32), "-X", "heapsize=" + heap, str(script)],
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.micropython
def test_the_32bit_port_signs_in_a_small_heap(tmp_path: Path) -> None:
    want = json.loads(PATH.read_text())["vectors"][1]["out"]
    out = sign_in_heap(tmp_path, HEAP)
    assert out.returncode == 0 and out.stdout.strip() == want, out.stdout + out.stderr
    # The bound is real: a heap far too small fails, so the assertion above can.
    small = sign_in_heap(tmp_path, "8k")
    assert small.returncode != 0 and "MemoryError" in small.stdout + small.stderr
