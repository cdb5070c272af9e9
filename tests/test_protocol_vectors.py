"""Every vector file under protocols/vectors passes in CPython and in the MicroPython unix port,
with identical results (same bytes, same tags, same error codes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocols.vectors import runner
from tests.protocols_vectors import expected, run_cpython, run_upy, vector_files


@pytest.mark.parametrize("path", vector_files(), ids=lambda p: p.stem)
def test_vectors_cpython(path: Path) -> None:
    doc = runner.load(str(path))
    got = run_cpython(path)
    for vector, want, have in zip(doc["vectors"], expected(doc), got, strict=True):
        assert have == want, vector["name"]


@pytest.mark.micropython
@pytest.mark.parametrize("path", vector_files(), ids=lambda p: p.stem)
def test_vectors_micropython(path: Path, tmp_path: Path) -> None:
    doc = runner.load(str(path))
    got = run_upy(path, tmp_path)
    for vector, want, have in zip(doc["vectors"], expected(doc), got, strict=True):
        assert have == want, vector["name"]


def test_message_vectors_are_current() -> None:
    """The committed messages.json is what tests/vectorgen.py generates (no silent drift)."""
    from tests import vectorgen

    assert vectorgen.OUT.read_text() == vectorgen.generate()
