"""Over-the-air updates from the operator's machine (`tmeter fw ota`): the signed manifest of a
bundle, and the rollout that offers it to meters in waves and serves their chunk requests.

The bundle is one target of a `tmeter fw build` output (``build/firmware/xtensawin`` for boards,
``build/firmware/unix`` for the unix port): every file under its ``firmware/`` and
``protocols/`` folders. The manifest is signed with the community's release key (a file of 64
hex digits), which the meters are provisioned with (config.json ``release_key``) and which is
not kept in the gateway's database (protocols/ota.py says why; issue 15 replaces it with a
public key). Messages and topics: protocols/ota.py; the meter's side: firmware/ota.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from protocols import ota as msgs
from protocols.errors import ProtocolError

PACKAGES = ("firmware", "protocols")


class OtaError(Exception):
    """A bundle, key or meter the rollout cannot use; the message is one line for the operator."""


def read_key(path: Path) -> bytes:
    """The release key in the file at ``path``: 32 bytes as 64 hex digits (whitespace ignored)."""
    try:
        text = Path(path).read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise OtaError(f"{path}: cannot read the release key: {exc}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise OtaError(f"{path}: the release key must be 64 hex digits") from None
    if len(key) != 32:
        raise OtaError(f"{path}: the release key must be 32 bytes (64 hex digits), not {len(key)}")
    return key


def bundle_files(bundle: Path) -> list[Path]:
    """The files of a bundle, relative to it, sorted as the manifest lists them."""
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise OtaError(f"{bundle}: no such bundle folder (a `tmeter fw build` target)")
    files = sorted(p.relative_to(bundle) for pkg in PACKAGES if (bundle / pkg).is_dir()
                   for p in (bundle / pkg).rglob("*") if p.is_file())
    names = {str(f) for f in files}
    if "firmware/main.mpy" not in names and "firmware/main.py" not in names:
        raise OtaError(f"{bundle}: not a firmware bundle (no firmware/main)")
    return files


def target_of(bundle: Path) -> str:
    """"xtensawin" or "unix" from the bundle folder's name (what `tmeter fw build` writes)."""
    name = Path(bundle).resolve().name
    return name if name in msgs.TARGETS else "unix"


def manifest(bundle: Path, version: int, rkid: int = 1, target: str | None = None) -> dict:
    """The manifest of the bundle at ``bundle``: each file's path, size and SHA-256."""
    files = []
    for rel in bundle_files(bundle):
        data = (Path(bundle) / rel).read_bytes()
        files.append([rel.as_posix(), len(data), hashlib.sha256(data).hexdigest()])
    msg = msgs.manifest(version, target or target_of(bundle), rkid, files)
    try:
        msgs.validate_manifest(msg)
    except ProtocolError as exc:
        raise OtaError(f"{bundle}: cannot be offered: {exc}") from None
    return msg


def signed_offer(bundle: Path, version: int, key: bytes, rkid: int = 1,
                 target: str | None = None) -> tuple[dict, bytes]:
    """(manifest, offer payload signed with the release ``key``)."""
    msg = manifest(bundle, version, rkid, target)
    try:
        return msg, msgs.encode_manifest(msg, key)
    except ProtocolError as exc:
        raise OtaError(f"{bundle}: cannot be offered: {exc}") from None


def version_number(text: str) -> int:
    """1.4.0 -> 10400, the status's fw counter (major * 10000 + minor * 100 + patch)."""
    parts = text.split(".")
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) != 3 or not all(0 <= n < 100 for n in nums) or not 0 < nums[0] < 100:
        raise OtaError(f"version {text!r}: expected MAJOR.MINOR.PATCH, each 0-99 (e.g. 1.4.0)")
    return nums[0] * 10000 + nums[1] * 100 + nums[2]


class Server:
    """Serves the chunk requests of meters for one signed bundle."""

    def __init__(self, bundle: Path, msg: dict) -> None:
        self.version = msg["version"]
        self.data = [(Path(bundle) / f[0]).read_bytes() for f in msg["files"]]
        self.served: dict[str, int] = {}

    def answer(self, payload: bytes) -> tuple[str, bytes] | None:
        """(meter, chunk payload) for a request, None for one that is not ours to serve."""
        try:
            req = msgs.decode_request(payload)
        except ProtocolError:
            return None
        if req["version"] != self.version or req["file"] >= len(self.data):
            return None
        data = self.data[req["file"]][req["off"]:req["off"] + req["n"]]
        self.served[req["meter"]] = self.served.get(req["meter"], 0) + len(data)
        return req["meter"], msgs.chunk(self.version, req["file"], req["off"], data)
