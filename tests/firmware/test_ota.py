"""Over-the-air update (issue 13): the signed manifest and its messages (protocols/ota.py), the
meter's staging, verification, switch and rollback (firmware.ota, the loader in
firmware/main.py) on the MicroPython unix port, a power cut at every step of it, and the rollout
tool (`tmeter fw ota`)."""

from __future__ import annotations

from tests import vectorgen


def test_ota_vectors_are_current() -> None:
    """The committed protocols/vectors/ota.json is what tests/vectorgen.py generates."""
    assert vectorgen.OTA_OUT.read_text() == vectorgen.generate_ota()
