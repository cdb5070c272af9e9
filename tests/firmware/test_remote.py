"""Remote configuration, key rotation and factory reset (issue 13) end to end: the firmware under
the MicroPython unix port on a real Mosquitto, commanded by the CLI (`tmeter fw config`,
`fw rotate-key`, `fw factory-reset`) that reads and writes the gateway's real registry, and a
gateway stand-in that verifies with the registry's keys and retires superseded ones as the
product's ingest does (gateway/ingest/codec.py KeyCache)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest

from gateway.ingest.codec import KeyCache
from gateway.registry import Registry
from protocols import canonical, remote, trailer
from sim_hardware.harness.redteam import tmeter
from tests.firmware import harness
from tests.firmware.fakegw import FakeGateway
from tmeter.fwtools.ota import Broker
from tmeter.fwtools.remote import Exchange, new_n

pytestmark = [pytest.mark.micropython, pytest.mark.mosquitto]

METER = "m01"


class RegistryGateway(FakeGateway):
    """The fake gateway with the registry's keys: every valid key of a meter verifies, and the
    first message under a newer key retires the older ones."""

    def __init__(self, host: str, port: int, reg: Registry) -> None:
        self.cache = KeyCache(reg)
        self.retire_counts: Counter[str] = Counter()
        super().__init__(host, port, "c1", {})

    def _key(self, meter: str, kid: int) -> bytes | None:
        return self.cache(meter, kid)

    def verified(self, meter: str, msg: dict) -> None:
        self.cache.retire_superseded([("", "", meter, msg, b"")], self.retire_counts)


@pytest.fixture
def setup(tmp_path, mosquitto, sim, clock, meters):
    reg = Registry(tmp_path / "gateway.db")
    reg.provision(METER, "c1", key=harness.meter_key(METER), mqtt_port=mosquitto.port)
    reg.provision("m09", "c1", mqtt_port=mosquitto.port)  # provisioned, never started
    toml = tmp_path / "gateway.toml"
    toml.write_text(f'community = "c1"\ndb = "{tmp_path / "gateway.db"}"\n'
                    f'[mqtt]\nhost = "127.0.0.1"\nport = {mosquitto.port}\n')
    gw = RegistryGateway(mosquitto.host, mosquitto.port, Registry(tmp_path / "gateway.db"))
    cfg = harness.write_config(tmp_path / METER, METER, mosquitto.port, harness.device_link(sim, 0),
                               clock)
    yield reg, gw, cfg, toml, sim, meters
    gw.close()
    reg.close()


def start(cfg: Path, meters: list) -> harness.Meter:
    m = harness.Meter(cfg).start()
    meters.append(m)
    return m


def requests_per_s(sim, seconds: float = 3.0) -> float:
    """Modbus requests the meter makes per wall second (its polls, and the battery's reads)."""
    stats = sim.endpoint_of(sim.household(0).meter_id).stats
    before = stats.requests
    time.sleep(seconds)
    return (stats.requests - before) / seconds


def cli(*args: str) -> tuple[int, str, str]:
    res = tmeter("fw", *args)
    return res.returncode, res.stdout.strip(), res.stderr.strip()


def readings(gw: FakeGateway, n: int, what: str, timeout: float = 30) -> list[dict]:
    have = len(gw.snapshot(METER))
    gw.wait_for(lambda g: len(g.snapshot(METER)) >= have + n, timeout, what)
    return gw.snapshot(METER)


def test_set_changes_the_poll_period_live_and_after_a_reboot(setup, mosquitto):
    reg, gw, cfg, toml, sim, meters = setup
    meter = start(cfg, meters)
    readings(gw, 2, "readings")
    fast = requests_per_s(sim)
    rc, out, err = cli("config", METER, "poll_s=30", "prefs.import_wtp=250000", "--config",
                       str(toml))
    assert rc == 0 and out == f"{METER}: set poll_s=30, prefs.import_wtp=250000", err
    slow = requests_per_s(sim)
    assert slow < fast * 0.6, (fast, slow)  # polls every 30 s (0.5 s wall) instead of every 5
    saved = json.loads((cfg.parent / "remote.json").read_text())
    assert saved["set"] == {"poll_s": 30, "prefs.import_wtp": 250000}
    meter.stop()
    meter = start(cfg, meters)
    readings(gw, 2, "readings after the reboot")
    assert requests_per_s(sim) < fast * 0.6  # remote.json applied at boot

    # The same command again (a replay), a forged one, one for the wrong key id, one setting
    # that may not be set and one out of range beside an allowed one: each refused with its
    # reason, nothing applied.
    key = harness.meter_key(METER)
    ex = Exchange(Broker("127.0.0.1", mosquitto.port, "c1"), METER)
    try:
        n = saved["n"]
        replay = remote.encode(remote.command(METER, n, "set", set={"poll_s": 5}), 1, key)
        hostile = {
            "replayed": replay,
            "bad_tag": remote.encode(remote.command(METER, new_n(), "reset"), 1, bytes(32)),
            "unknown_key": remote.encode(remote.command(METER, new_n(), "reset"), 2, key),
            "not_allowed": trailer.encode(canonical.encode(remote.command(
                METER, new_n(), "set", set={"poll_s": 5, "mqtt.host": 1})), 1, key),
            "out_of_range": trailer.encode(canonical.encode(remote.command(
                METER, new_n(), "set", set={"poll_s": 5, "status_s": 0})), 1, key),
            "too_large": replay[:-70] + b" " * 2000 + replay[-70:],
        }
        for reason, payload in hostile.items():
            answer = ex._one(payload, 0, {1: key}, 15)
            assert answer["ok"] == 0 and answer["reason"] == reason, (reason, answer)
    finally:
        ex.close()
    assert json.loads((cfg.parent / "remote.json").read_text()) == saved
    assert requests_per_s(sim, 2) < fast * 0.6
    assert "cfg: refused: replayed" in meter.output()
    meter.stop()
    harness.assert_all_acked_once(gw, METER, cfg.parent, 4)


def test_rotation_and_factory_reset_lose_no_reading(setup):
    reg, gw, cfg, toml, sim, meters = setup
    meter = start(cfg, meters)
    readings(gw, 3, "readings under key 1")
    assert cli("config", METER, "status_s=5", "--config", str(toml))[0] == 0

    rc, out, err = cli("rotate-key", METER, "--config", str(toml))
    assert rc == 0 and out.startswith(f"{METER}: signs with key 2 now"), (out, err)
    after = readings(gw, 3, "readings under key 2")
    kids = [r["kid"] for r in after]
    assert kids == sorted(kids) and kids[0] == 1 and kids[-1] == 2, kids  # one switch, no return
    gw.wait_for(lambda g: reg.key(METER, 1) is None, 15, "key 1 retired")
    assert reg.valid_keys(METER) == {2: reg.key(METER, 2)}
    rot = json.loads((cfg.parent / "rotate.json").read_text())
    assert rot["kid"] == 2 and bytes.fromhex(rot["key"]) == reg.key(METER, 2)
    # The database takes key 1 for the meter's again (as after a re-flash it has not seen yet):
    # the command under key 1 is refused as unknown_key and sent again under key 2.
    reg.conn.execute("UPDATE meter_keys SET retired=NULL WHERE meter=? AND kid=1", (METER,))
    assert reg.held_key(METER)[0] == 1
    rc, out, err = cli("config", METER, "status_s=4", "--config", str(toml))
    assert rc == 0 and "cfg: refused: unknown_key" in meter.output(), (out, err)
    meter.kill()  # a power cut: the broker publishes the meter's last will, under key 2
    gw.wait_for(lambda g: any(s["online"] == 0 and s["kid"] == 2 for s in g.statuses), 15,
                "the last will under the new key")
    meter = start(cfg, meters)  # a reboot: rotate.json's key
    after = readings(gw, 2, "readings after the reboot")
    assert after[-1]["kid"] == 2 and after[-1]["boot"] == 2

    rc, out, err = cli("factory-reset", METER, "--config", str(toml))
    assert rc == 0 and out == f"{METER}: factory reset, restarting with its provisioned key 1", err
    assert meter.wait(15) == 3  # Board.reset on the unix port: the supervisor restarts it
    assert not (cfg.parent / "rotate.json").exists()
    saved = json.loads((cfg.parent / "remote.json").read_text())
    assert saved["set"] == {} and saved["n"] > 0  # overrides gone, the replay guard kept
    assert set(reg.valid_keys(METER)) == {1}
    seq_before = gw.snapshot(METER)[-1]["seq"]
    doc = json.loads(cfg.read_text())
    cfg.write_text(json.dumps({**doc, "max_intervals": 4}))  # the test's: stop once drained
    meter = start(cfg, meters)
    assert meter.wait(60) == 0, meter.output()[-2000:]
    after = gw.snapshot(METER)
    new = [r for r in after if r["seq"] > seq_before]
    # A reading may close between the reset's answer and the reboot: it is signed with key 1
    # already and queued, and the next boot delivers it.
    assert all(r["kid"] == 1 for r in new), new
    assert sum(r["boot"] == 3 for r in new) >= 4 and {r["boot"] for r in new} <= {2, 3}, new
    harness.assert_all_acked_once(gw, METER, cfg.parent, len(after))  # no gap, no reused seq


def test_a_command_to_a_meter_that_does_not_answer_times_out(setup):
    _reg, _gw, _cfg, toml, _sim, _meters = setup
    started = time.monotonic()
    rc, out, err = cli("config", "m09", "poll_s=30", "--config", str(toml), "--timeout", "2")
    assert rc == 2 and out == "" and err.count("\n") == 0, (rc, out, err)
    assert err == "tmeter: m09: no answer within 2 s (offline, or a rotation or reset waits for" \
                  " its queue to empty)"
    assert time.monotonic() - started < 30
    for args in (("config", "m09", "poll_s=0"), ("config", "m09", "mqtt.host=1"),
                 ("config", "m09"), ("rotate-key", "nobody"), ("config", "m09", "poll_s=x")):
        rc, out, err = cli(*args, "--config", str(toml), "--timeout", "2")
        assert rc == 2 and err.startswith("tmeter: ") and err.count("\n") == 0, (args, err)


# The meter's side in one MicroPython process, on the 32-bit port with the `fw build` bytecode
# (a board's object sizes): what importing firmware/remote.py costs, and that it is gone again
# after a set and after a rotation (a stand-in app: config, counters, queue, MQTT client).
DRIVER = r'''
import asyncio, gc, json, sys
from binascii import hexlify, unhexlify
from firmware.files import Files

class B(Files):
    def log(self, s): print(s)
    async def sleep_ms(self, ms): await asyncio.sleep_ms(ms)
    def reset(self): print("reset")
class K:
    pass
class Q(K):
    def __len__(self): return 0
class C(K):
    connected = False
app = K()
app.board = B()
app.board.base = sys.argv[1]
app.meter_id, app.kid, app.key = "m01", 1, bytes(range(32))
app.cfg = {"community": "c1", "poll_s": 5, "kid": 1, "prefs": {"import_wtp": 1}}
app.c = {}
app.outbox, app.awards, app.client = Q(), K(), C()
with open(sys.argv[2]) as f:
    cmds = [unhexlify(h) for h in json.load(f)]

async def main():
    # What a booted meter holds anyway (tests/firmware/test_memory.py RUNTIME_MODULES).
    from protocols import auth, canonical, meterlink, topics, trailer
    gc.collect()
    base = gc.mem_alloc()
    import firmware.remote
    gc.collect()
    print("COST", gc.mem_alloc() - base)
    for m in ("firmware.remote", "protocols.remote", "protocols.downlink"):
        del sys.modules[m]
    for p in cmds:
        __import__("firmware.remote", None, None, ("receive",)).receive(app, p)
        await asyncio.sleep_ms(700)  # the answer task ends (a rotation reconnects after 0.5 s)
        print("LOADED", [m for m in ("firmware.remote", "protocols.remote", "protocols.downlink",
                                     "firmware.ondemand") if m in sys.modules])
    gc.collect()
    print("AFTER", gc.mem_alloc() - base)
    print("STATE", json.dumps({"kid": app.kid, "key": hexlify(app.key).decode(), "cfg": app.cfg,
                               "c": app.c}))
asyncio.run(main())
'''


def test_the_remote_module_is_loaded_only_for_a_command(tmp_path, fw_build, monkeypatch):
    import re
    import subprocess

    from tmeter.fwtools.runner import find_micropython, micropython_env

    monkeypatch.setenv("TMETER_MICROPYTHON_BITS", "32")
    key, new = bytes(range(32)), bytes(range(50, 82))
    n = new_n()  # milliseconds since 1970: a long int on a 32-bit port (above 2**30)
    cmds = [remote.encode(remote.command(METER, n, "set", set={"poll_s": 30,
                                                               "prefs.import_wtp": 7}), 1, key),
            remote.encode(remote.rotate(METER, n + 1, key, 2, new), 1, key)]
    (tmp_path / "cmds.json").write_text(json.dumps([c.hex() for c in cmds]))
    (tmp_path / "drive.py").write_text(DRIVER)
    env = micropython_env()
    env["MICROPYPATH"] = ".frozen:" + str(fw_build / "unix")
    out = subprocess.run([find_micropython(), "-X", "heapsize=96K", str(tmp_path / "drive.py"),
                          str(tmp_path), str(tmp_path / "cmds.json")], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    cost = int(re.search(r"COST (\d+)", text).group(1))
    after = int(re.search(r"AFTER (-?\d+)", text).group(1))
    print(f"32-bit port, .mpy: importing firmware.remote with protocols.remote costs {cost} bytes;"
          f" after a set and a rotation {after} bytes remain allocated")
    assert re.findall(r"LOADED (.*)", text) == ["[]", "[]"], text
    assert after < cost // 4, text  # unloaded: its code and data went back to the heap
    state = json.loads(re.search(r"STATE (.*)", text).group(1))
    assert state["kid"] == 2 and state["key"] == new.hex() and state["c"] == {}  # none waits
    assert state["cfg"]["poll_s"] == 30 and state["cfg"]["prefs"]["import_wtp"] == 7
    assert json.loads((tmp_path / "remote.json").read_text()) == {
        "n": n + 1, "set": {"poll_s": 30, "prefs.import_wtp": 7}}
    assert json.loads((tmp_path / "rotate.json").read_text()) == {"kid": 2, "key": new.hex()}


@pytest.mark.parametrize("remote_json, rotate_json", [
    ('{"n": 3, "set": {"poll_s": "30"}}', None),                # a value of the wrong type
    ('{"n": 3, "set": {"poll_s": 30, "prefs.x.y": 1}}', None),  # no such section
    ('{"n": 3, "set": ["poll_s"]}', None),
    ('[1, 2]', None),
    ('{"n": 3, "se', None),                                      # torn (cannot be: rename)
    ('{"n": 3, "set": {"poll_s": 30}}', '{"kid": 2, "key": "abcd"}'),  # a short key
    ('{"n": 3, "set": {"poll_s": 30}}', '{"kid": "2", "key": "%s"}' % ("00" * 32)),
    ('{"n": 3, "set": {"poll_s": 30}}', '{"key": "%s"}' % ("00" * 32)),
    ('{"n": 3, "set": {"poll_s": 30}}', '{"kid": 2, "key": "zz"}'),
])
def test_damaged_remote_files_are_ignored_at_boot(tmp_path, remote_json, rotate_json, capsys):
    """firmware/config.py (boot): a damaged remote.json or rotate.json boots config.json whole,
    nothing of either file half-applied."""
    from firmware import config

    cfg_path = harness.write_config(tmp_path, METER, 1883, "tcp:127.0.0.1:1", harness.sim_clock(1))
    plain = config.load(str(cfg_path))
    (tmp_path / "remote.json").write_text(remote_json)
    if rotate_json is not None:
        (tmp_path / "rotate.json").write_text(rotate_json)
    assert config.load(str(cfg_path)) == plain
    assert "damaged, ignored" in capsys.readouterr().out


def test_remote_files_apply_at_boot(tmp_path):
    from firmware import config

    cfg_path = harness.write_config(tmp_path, METER, 1883, "tcp:127.0.0.1:1", harness.sim_clock(1))
    (tmp_path / "remote.json").write_text('{"n": 3, "set": {"poll_s": 30, "prefs.pv_price": 7}}')
    (tmp_path / "rotate.json").write_text('{"kid": 4, "key": "%s"}' % ("ab" * 32))
    cfg = config.load(str(cfg_path))
    assert cfg["poll_s"] == 30 and cfg["prefs"]["pv_price"] == 7 and cfg["prefs"]["import_wtp"]
    assert cfg["kid"] == 4 and cfg["key_bytes"] == bytes.fromhex("ab" * 32)
    assert config.load(str(cfg_path), str(tmp_path / "elsewhere"))["kid"] == 1  # another folder
