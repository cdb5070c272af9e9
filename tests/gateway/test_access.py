"""Who may do what on the gateway's host and broker: sessions bound to logins on a real Mosquitto
running the generated files, meter ids that would collide with the gateway's logins, the modes
of the files holding key material whatever the umask, and the systemd unit's sandbox."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.daemon import GatewayThread
from gateway.registry import Registry, gateway_logins
from sim_hardware.harness.forged_meter import MeterLink, MeterSpec, gateway_client_ids, intrude
from tests.gateway.conftest import ROOT, Secured, first_point_clearing, tmeter, wait_until, write_toml


def test_a_meter_cannot_wipe_the_gateways_queued_readings(secured: Secured) -> None:
    """The gateway is down; the broker holds a meter's readings in the uplink's persistent
    session. Another meter connecting under each of the gateway's client ids with a clean
    session must not wipe them: the gateway takes every one when it comes back."""
    cfg, broker = secured.cfg, secured.broker
    (ma, ma_pw), (mb, mb_pw) = secured.meters["ma"], secured.meters["mb"]
    GatewayThread(cfg, first_point_clearing).start().stop()  # the uplink's session exists
    link = MeterLink(broker, mb, mb_pw)
    link.subscribe_acks()
    wanted = link.send(cfg, 20)
    for client_id in gateway_client_ids(cfg):
        assert intrude(broker, "ma", ma_pw, client_id) == 0  # the broker lets ma in, as ma
    gw = GatewayThread(cfg, first_point_clearing).start()
    try:
        assert wait_until(lambda: wanted <= link.acks.keys(), timeout=30), \
            f"{len(wanted - link.acks.keys())} of {len(wanted)} queued readings lost"
        assert set(link.acks.values()) == {"stored"}
    finally:
        gw.stop()
        link.close()


def test_a_meter_cannot_disturb_the_gateways_or_another_meters_session(secured: Secured) -> None:
    cfg, broker = secured.cfg, secured.broker
    (ma, ma_pw), (mb, mb_pw) = secured.meters["ma"], secured.meters["mb"]
    gw = GatewayThread(cfg, first_point_clearing).start()
    link = MeterLink(broker, mb, mb_pw)
    try:
        link.subscribe_acks()
        first = link.send(cfg, 5)
        assert wait_until(lambda: first <= link.acks.keys())
        for client_id in [*gateway_client_ids(cfg), "mb"]:
            assert intrude(broker, "ma", ma_pw, client_id) == 0
        # mb kept its connection, and its readings still reach the gateway and are acked.
        assert link.drops == 0
        later = link.send(cfg, 5)
        assert wait_until(lambda: later <= link.acks.keys())
        snap = gw.gateway.counters
        assert snap.get("up_restarts", 0) == 0 and snap.get("down_restarts", 0) == 0
        assert snap["stored"] == 10
    finally:
        link.close()
        gw.stop()
    # Mosquitto noted no takeover of any session (it logs "already connected, closing old").
    assert "already connected" not in broker.log_text()


def test_a_rotated_meter_keeps_its_login_and_its_old_key_until_it_uses_the_new_one(secured: Secured) -> None:
    """The running daemon: a rotation keeps the meter's broker login (no new broker files), the
    old key works until the first message under the new one, which retires it."""
    cfg, broker = secured.cfg, secured.broker
    old, password = secured.meters["ma"]
    gw = GatewayThread(cfg, first_point_clearing).start()
    link = MeterLink(broker, old, password)
    reg = Registry(cfg.db)
    try:
        link.subscribe_acks()
        dev = reg.provision("ma", "c1", rotate=True, password=password)
        before = link.send(cfg, 2)  # the deployed meter, still on key id 1
        assert wait_until(lambda: before <= link.acks.keys())
        assert reg.key("ma", 1) == old.key
        link.spec = MeterSpec("ma", dev.kid, dev.key, seq=old.seq, counter_imp=old.counter_imp,
                              counter_exp=old.counter_exp)
        link.close()
        link = MeterLink(broker, link.spec, dev.mqtt.password)  # flashed: the same login works
        link.subscribe_acks()
        after = link.send(cfg, 2)
        assert wait_until(lambda: after <= link.acks.keys())
        assert set(link.acks.values()) == {"stored"}
        assert wait_until(lambda: reg.key("ma", 1) is None)
        assert gw.gateway.counters["keys_retired"] == 1
    finally:
        reg.close()
        link.close()
        gw.stop()


def test_meter_ids_that_are_the_gateways_logins_are_refused(tmp_path: Path) -> None:
    db = str(tmp_path / "g.db")
    toml = write_toml(tmp_path / "gateway.toml", db)
    for meter in gateway_logins("gateway"):
        res = tmeter("provision", meter, "--config", str(toml), "--out", str(tmp_path / f"{meter}.json"))
        assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
        assert "gateway's MQTT logins" in res.stderr and not (tmp_path / f"{meter}.json").exists()
    # Provisioned without the check (another gateway user then): mosquitto-config refuses.
    reg = Registry(db)
    reg.provision("gateway-down", "c1")
    reg.close()
    res = tmeter("gateway", "mosquitto-config", "--config", str(toml), "--out", str(tmp_path / "broker"))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "'gateway-down' collides" in res.stderr and not (tmp_path / "broker" / "passwd").exists()


UMASK_0 = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    os.umask(0)
    from gateway import db, mosquitto_conf
    from gateway.ledger import note
    from gateway.registry import Registry
    out = Path(sys.argv[1])
    old = out / "old.db"
    old.write_bytes(b""); os.chmod(old, 0o644)   # a database made before the rule
    db.connect(old).close()
    reg = Registry(out / "gateway.db")
    dev = reg.provision("m01", "c1")
    reg.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    dev.write(out / "m01.json")
    note.load_or_create_signing_key(out / "ledger.key")
    mosquitto_conf.write(reg, "c1", "gateway", "pw", out / "broker")
    os.chmod(out / "m01.json", 0o644)
    dev.write(out / "m01.json")                  # rewritten over a wider file
    modes = {p.name: os.stat(p).st_mode & 0o777 for p in out.rglob("*") if p.is_file()}
    print(repr(modes))
    reg.close()
""")


def test_key_material_is_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-c", UMASK_0, str(tmp_path)], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    modes = eval(res.stdout)  # noqa: S307 - our own subprocess's repr of a dict
    for name in ("gateway.db", "gateway.db-wal", "gateway.db-shm", "old.db", "m01.json", "ledger.key"):
        assert modes[name] == 0o600, (name, oct(modes[name]))
    # Mosquitto reads its files as the user "mosquitto": group read where that group exists.
    for name in ("passwd", "acl"):
        broker_file = tmp_path / "broker" / name
        expected = 0o640 if broker_file.stat().st_gid != os.getgid() else 0o600
        assert modes[name] == expected, (name, oct(modes[name]))


SYSTEMD_LEVELS = ("PERFECT", "SAFE", "OK")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (Debian: systemd)")
def test_the_systemd_unit_is_sandboxed(tmp_path: Path) -> None:
    unit = tmp_path / "tmeter-gateway.service"
    shutil.copy(ROOT / "deploy" / "tmeter-gateway.service", unit)
    res = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                         capture_output=True, text=True, timeout=60)
    found = re.search(r"Overall exposure level for \S+: ([\d.]+) (\w+)", res.stdout)
    assert found, res.stdout + res.stderr
    assert found.group(2) in SYSTEMD_LEVELS, res.stdout
    text = unit.read_text()
    for line in ("UMask=0077", "StateDirectory=tmeter", "StateDirectoryMode=0700", "CapabilityBoundingSet=\n",
                 "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "SystemCallFilter=@system-service"):
        assert line in text, line
    # The unit's own syntax (its ExecStart need not exist here).
    verify = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                            timeout=60)
    problems = [ln for ln in verify.stderr.splitlines() if "tmeter-gateway.service" in ln
                and "Command /opt/tmeter" not in ln and "Failed to create" not in ln]
    assert problems == [], verify.stderr


def test_the_gateways_libraries_need_no_writable_executable_memory(tmp_path: Path) -> None:
    """MemoryDenyWriteExecute=yes in the unit: the daemon, its market engines (numpy, scipy) and
    its signatures (cryptography) run under the kernel's equivalent, prctl(PR_SET_MDWE)."""
    script = textwrap.dedent("""
        import ctypes, sys
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_MDWE, PR_GET_MDWE, REFUSE_EXEC_GAIN = 65, 66, 1
        if libc.prctl(PR_SET_MDWE, REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
            print("unsupported"); sys.exit(0)
        import mmap
        try:  # the rule is in force: a writable and executable mapping is refused
            mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            print("not enforced"); sys.exit(1)
        except OSError:
            pass
        from pathlib import Path
        from gateway import daemon  # noqa: F401 - every module the daemon loads
        from gateway.ingest import pump_process  # noqa: F401
        from gateway.ledger import note
        from gateway.market import Bid, CommunityTerms, P2PParams, clear
        key = note.load_or_create_signing_key(Path(sys.argv[1]) / "k")
        note.sign(b"x\\n", "o", key)
        bids = [Bid.quadratic("m1", 4.0, 0.13, -2.0, 0.0), Bid.curve("m2", [[-1.0, 0.05], [0.0, 0.05]]),
                Bid.curve("m3", [[-1.5, 0.40], [0.0, 0.40]])]
        terms = CommunityTerms(import_price=0.30, export_price=0.08)
        clear(bids, terms, "uniform")
        clear(bids, terms, "p2p", P2PParams(k=2, positions={"m1": (0, 0), "m2": (1, 0), "m3": (0, 2)}))
        print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    if res.stdout.strip() == "unsupported":
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stdout + res.stderr
