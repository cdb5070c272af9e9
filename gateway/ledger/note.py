"""C2SP signed notes (c2sp.org/signed-note) with Ed25519 (RFC 8032) signatures, and the
tlog-checkpoint body (c2sp.org/tlog-checkpoint) the gateway signs at each interval close.

A signed note is the text (ending in a newline), a blank line, then signature lines
``"\u2014 " <key name> " " base64(key id || signature) "\n"``. The key id is the first four bytes
of SHA-256(name || 0x0A || 0x01 || public key), 0x01 naming Ed25519. The signature covers the
text alone, so ``openssl pkeyutl -verify -rawin`` checks it given the text, the 64 raw signature
bytes and the public key.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIG_PREFIX = "\u2014 "
ED25519 = b"\x01"


class NoteError(ValueError):
    """A note or checkpoint that does not parse or does not verify; the message says why."""


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + public_key).digest()[:4]


def raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def verifier_key(name: str, key: Ed25519PublicKey) -> str:
    """The vkey text form ``name+hex(key id)+base64(0x01 || public key)``."""
    raw = raw_public(key)
    return f"{name}+{key_id(name, raw).hex()}+{base64.b64encode(ED25519 + raw).decode()}"


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The gateway's ledger key, created (mode 0600) on first use."""
    if path.exists():
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise NoteError(f"{path} is not an Ed25519 private key")
        return key
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    return key


def sign(text: bytes, name: str, key: Ed25519PrivateKey) -> bytes:
    if not text.endswith(b"\n") or b"\n\n" in text:
        raise NoteError("note text must end in one newline and hold no blank line")
    kid = key_id(name, raw_public(key.public_key()))
    sig = base64.b64encode(kid + key.sign(text)).decode()
    return text + b"\n" + f"{SIG_PREFIX}{name} {sig}\n".encode()


@dataclass(frozen=True)
class Signature:
    name: str
    key_id: bytes
    sig: bytes


def split(note: bytes) -> tuple[bytes, list[Signature]]:
    """Text and signature lines of a signed note (not yet verified)."""
    cut = note.rfind(b"\n\n")
    if cut < 0 or not note.endswith(b"\n"):
        raise NoteError("not a signed note: no blank line before the signatures")
    text, sigs = note[: cut + 1], []
    for line in note[cut + 2:-1].decode("utf-8", "replace").split("\n"):
        if not line.startswith(SIG_PREFIX) or line.count(" ") != 2:
            raise NoteError(f"malformed signature line {line[:60]!r}")
        name, blob = line[len(SIG_PREFIX):].split(" ")
        try:
            raw = base64.b64decode(blob, validate=True)
        except ValueError:
            raise NoteError("signature is not base64") from None
        if len(raw) < 5:
            raise NoteError("signature too short")
        sigs.append(Signature(name, raw[:4], raw[4:]))
    return text, sigs


def verify(note: bytes, name: str, key: Ed25519PublicKey) -> bytes:
    """The text of ``note`` if it carries a valid signature by (name, key); NoteError otherwise."""
    text, sigs = split(note)
    kid = key_id(name, raw_public(key))
    for s in sigs:
        if s.name == name and s.key_id == kid:
            try:
                key.verify(s.sig, text)
            except InvalidSignature:
                raise NoteError(f"signature by {name} does not verify") from None
            return text
    raise NoteError(f"no signature by {name} with key id {kid.hex()}")


def signature_bytes(note: bytes, name: str) -> bytes:
    """The raw 64-byte Ed25519 signature by ``name``, as openssl wants it in -sigfile."""
    for s in split(note)[1]:
        if s.name == name:
            return s.sig
    raise NoteError(f"no signature by {name}")


# --- tlog-checkpoint body: origin, decimal tree size, base64 root hash, one per line.


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def text(self) -> bytes:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n".encode()

    @property
    def root_b64(self) -> str:
        return base64.b64encode(self.root).decode()


def parse_checkpoint(text: bytes) -> Checkpoint:
    lines = text.decode("utf-8", "replace").split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise NoteError("checkpoint needs origin, size and root lines")
    origin, size, root_b64 = lines[0], lines[1], lines[2]
    if not origin or not size.isdigit() or (len(size) > 1 and size[0] == "0"):
        raise NoteError("checkpoint origin or size malformed")
    try:
        root = base64.b64decode(root_b64, validate=True)
    except ValueError:
        raise NoteError("checkpoint root is not base64") from None
    if len(root) != 32:
        raise NoteError("checkpoint root is not 32 bytes")
    return Checkpoint(origin, int(size), root)


def sign_checkpoint(cp: Checkpoint, key: Ed25519PrivateKey) -> bytes:
    # C2SP tlog-checkpoint: the signing key's name is the log's origin.
    return sign(cp.text(), cp.origin, key)


def open_checkpoint(note: bytes, origin: str, key: Ed25519PublicKey) -> Checkpoint:
    cp = parse_checkpoint(verify(note, origin, key))
    if cp.origin != origin:
        raise NoteError(f"checkpoint origin {cp.origin!r} is not {origin!r}")
    return cp
