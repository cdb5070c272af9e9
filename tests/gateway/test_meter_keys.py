"""The registry's meter signing keys and their PEM form (issue 15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway import meterkeys
from gateway.registry import Registry, RegistryError
from protocols import p256

D = 0x1234567890ABCDEF  # a fixed test key: the device's private half
PUB = p256.public_key(D)


@pytest.fixture()
def reg(tmp_path: Path) -> Registry:
    r = Registry(tmp_path / "gw.db")
    r.provision("m01")
    return r


def test_enrol_numbers_keys_and_retires_the_older(reg: Registry) -> None:
    assert reg.valid_signing_keys("m01") is None
    assert reg.enrol("m01", PUB) == 1
    assert reg.signing_key("m01", 1) == PUB
    other = p256.public_key(D + 1)
    assert reg.enrol("m01", other) == 2  # a replaced board
    assert reg.signing_key("m01", 1) is None and reg.signing_key("m01", 2) == other
    assert reg.signing_keys("m01") == {1: PUB, 2: other}
    assert reg.valid_signing_keys("m01") == {2: other}
    assert reg.signing_key("m01", 3) is None and reg.signing_key("m02", 1) is None


@pytest.mark.parametrize("pub", [b"", b"\x04" + b"\x00" * 64, PUB[:-1], b"\x02" + PUB[1:33],
                                 PUB[:-1] + bytes([PUB[-1] ^ 1]), "04" * 65])
def test_enrol_refuses_what_is_no_point_on_the_curve(reg: Registry, pub: bytes) -> None:
    with pytest.raises(RegistryError) as err:
        reg.enrol("m01", pub)  # type: ignore[arg-type]
    assert "\n" not in str(err.value) and "P-256" in str(err.value)
    assert reg.valid_signing_keys("m01") is None


def test_enrol_needs_a_provisioned_meter(reg: Registry) -> None:
    with pytest.raises(RegistryError, match="not provisioned"):
        reg.enrol("m99", PUB)


def test_pem_round_trip_and_openssl_form() -> None:
    pem = meterkeys.pem_of(PUB)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    assert meterkeys.pub_of_pem(pem) == PUB
    assert meterkeys.fingerprint(PUB).startswith("sha256:")


@pytest.mark.parametrize("data", [b"", b"junk", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"])
def test_pub_of_pem_refuses_junk_in_one_line(data: bytes) -> None:
    with pytest.raises(meterkeys.MeterKeyError) as err:
        meterkeys.pub_of_pem(data)
    assert "\n" not in str(err.value)


def test_pub_of_pem_refuses_other_key_types() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    for priv in (ed25519.Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP384R1())):
        pem = priv.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        with pytest.raises(meterkeys.MeterKeyError, match="P-256"):
            meterkeys.pub_of_pem(pem)


def test_verify_takes_the_device_signature_only() -> None:
    body = b'{"a":1}'
    sig = p256.sign(D, p256.sha256(body))
    key = meterkeys.load(PUB)
    assert meterkeys.verify(key, body, sig)
    assert not meterkeys.verify(key, body + b" ", sig)
    assert not meterkeys.verify(key, body, sig[:-1])
    assert not meterkeys.verify(key, body, b"\x00" * 64)
