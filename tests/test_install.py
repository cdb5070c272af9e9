"""A core-only install (``pip install .``: no extras, not editable, in a fresh venv) is a working
gateway host: the daemon's command, provisioning, ledger verification and clearing run, and every
other command group answers with one line naming the extra it needs. One venv serves every check."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tmeter.cli import COMMANDS, Group, install_hint

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("firmware", "protocols", "gateway", "sim_hardware", "tmeter")
# What a working tree holds beyond the source: building in the checkout itself would add build/
# there, and stale files in build/ end up in later wheels.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "out", "*.egg-info",
                                    "__pycache__", "*.pyc", "*.mpy", ".hypothesis", ".pytest_cache",
                                    ".ruff_cache")
OPTIONAL_GROUPS = {"demo", "sim", "fw", "study", "bench"}
# Neither the checkout nor another environment may leak into the core venv's imports.
ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


@dataclass(frozen=True)
class Core:
    src: Path  # the copy that was installed
    bin: Path  # the venv's bin/

    def run(self, program: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.bin / program), *args], check=False, cwd=cwd, env=ENV,
                              capture_output=True, text=True, timeout=120)

    def tmeter(self, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return self.run("tmeter", *args, cwd=cwd)

    def python(self, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return self.run("python", "-c", code, cwd=cwd)


@pytest.fixture(scope="module")
def core(tmp_path_factory: pytest.TempPathFactory) -> Core:
    root = tmp_path_factory.mktemp("core-install")
    src, venv = root / "src", root / "venv"
    shutil.copytree(REPO, src, ignore=NOT_SOURCE)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=ENV, timeout=120)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", str(src)],
                         check=False, env=ENV, capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return Core(src, venv / "bin")


def package_files(root: Path) -> set[str]:
    """Our packages' files under ``root``, except READMEs (documentation, not package data)."""
    return {str(p.relative_to(root)) for pkg in PACKAGES for p in (root / pkg).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".md")}


def test_the_install_holds_every_module_and_data_file(core: Core, tmp_path: Path) -> None:
    out = core.python("import sysconfig; print(sysconfig.get_path('purelib'))", tmp_path)
    site = Path(out.stdout.strip())
    assert site.is_relative_to(core.bin.parent), out.stdout + out.stderr
    missing = package_files(core.src) - package_files(site)
    assert not missing, f"not in the wheel: {sorted(missing)}"


def test_the_gateway_imports_with_the_core_dependencies(core: Core, tmp_path: Path) -> None:
    code = ("import importlib, pkgutil, gateway, protocols\n"
            "for pkg in (gateway, protocols):\n"
            "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
            "        importlib.import_module(m.name)\n"
            "print(gateway.__file__)\n")
    out = core.python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).is_relative_to(core.bin.parent)  # the install, not the checkout


def test_gateway_run_help(core: Core, tmp_path: Path) -> None:
    out = core.tmeter("gateway", "run", "--help", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "--config" in out.stdout


def test_provision_writes_a_device_config(core: Core, tmp_path: Path) -> None:
    out = core.tmeter("provision", "m01", "--db", "gateway.db", "--out", "m01.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    config = json.loads((tmp_path / "m01.json").read_text())
    assert config["meter"] == "m01" and len(bytes.fromhex(config["key"])) == 32


# A small real ledger, written by the gateway's own code: three interval summaries and a checkpoint.
WRITE_LEDGER = """
from pathlib import Path
from gateway import db
from gateway.ledger import note
from gateway.ledger.tlog import Ledger, encode_record

key = note.load_or_create_signing_key(Path("gateway.db.ledger-key.pem"))
ledger = Ledger(db.connect("gateway.db"), "tmeter.local/c1", key)
with ledger.transaction():
    for iv in range(3):
        fields = {"iv": iv, "rev": 0, "members": 0, "amount": 0}
        ledger.append("interval", None, iv, encode_record("interval", fields))
ledger.checkpoint()
"""


def test_ledger_verify(core: Core, tmp_path: Path) -> None:
    written = core.python(WRITE_LEDGER, tmp_path)
    assert written.returncode == 0, written.stderr
    out = core.tmeter("ledger", "verify", "--db", "gateway.db", cwd=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("ledger OK: 4 leaves (0 erased), 1 checkpoints"), out.stdout  # 3 + the checkpoint leaf
    from gateway.ledger import records  # noqa: PLC0415 - stored compressed: edited as its bytes

    with sqlite3.connect(tmp_path / "gateway.db") as conn:  # so OK means checked: one edit fails it
        [record] = conn.execute("SELECT record FROM openings WHERE idx = 1").fetchone()
        edited = records.pack(records.unpack(bytes(record)).replace(b'"members":0', b'"members":1'))
        conn.execute("UPDATE openings SET record = ? WHERE idx = 1", (edited,))
    out = core.tmeter("ledger", "verify", "--db", "gateway.db", cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "leaf 1 " in out.stdout and "ledger FAILED" in out.stdout, out.stdout


BIDS = {
    "community": {"import_price": 0.30, "export_price": 0.08},
    "bids": [{"meter": "m2", "curve": [[-1.0, 0.05], [0.0, 0.05], [0.0, 0.10], [3.0, 0.20]]},
             {"meter": "m3", "curve": [[-1.5, 0.40], [0.0, 0.40]]}],
    "p2p": {"k": 10, "positions": {"m2": [1, 0], "m3": [0, 2]}},
}


def test_clear_uniform_and_peer_to_peer(core: Core, tmp_path: Path) -> None:
    (tmp_path / "bids.json").write_text(json.dumps(BIDS))
    uniform = core.tmeter("clear", "--bids", "bids.json", "--json", cwd=tmp_path)
    assert uniform.returncode == 0, uniform.stderr
    assert json.loads(uniform.stdout)["price"] == pytest.approx(0.15)
    p2p = core.tmeter("clear", "--bids", "bids.json", "--json", "--mechanism", "p2p",  # scipy
                      cwd=tmp_path)
    assert p2p.returncode == 0, p2p.stderr
    [trade] = json.loads(p2p.stdout)["trades"]
    assert (trade["from"], trade["to"]) == ("m2", "m3") and trade["quantity"] == pytest.approx(1.5)


def test_the_optional_groups_are_the_expected_ones() -> None:
    assert {g.name for g in COMMANDS if g.extras} == OPTIONAL_GROUPS


@pytest.mark.parametrize("group", [g for g in COMMANDS if g.extras], ids=lambda g: g.name)
def test_an_optional_group_names_its_extra_in_one_line(core: Core, tmp_path: Path,
                                                       group: Group) -> None:
    for args in ([group.name], [group.name, "--help"]):
        out = core.tmeter(*args, cwd=tmp_path)
        assert out.returncode == 2 and out.stdout == "", out.stdout + out.stderr
        [line] = out.stderr.splitlines()
        assert line.startswith(f"tmeter {group.name}: needs the extra"), line
        assert line.endswith(install_hint(group.extras)), line
