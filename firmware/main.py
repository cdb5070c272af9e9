# Entry point. A board's /main.py is `from firmware.main import main; main()`; on the unix
# port or CPython:  micropython -m firmware.main [CONFIG [STATE_DIR]]
#
# Load order is part of the memory budget: the application is imported first, then the
# configuration and register plans are read by boot-only modules that are unloaded again. The
# names in config.json and regplan.json then parse to the application's own qstrs instead of
# new strings, and the boot-only code, above the application, leaves one free region behind.
#
# This module is the loader of over-the-air updates (firmware/ota.py): it reads ota/pointer,
# counts a boot on trial, and runs the slot it names (its folder first on sys.path, the factory
# packages forgotten) or the factory bundle. A slot that fails to import or boot, or whose boots
# on trial run out, is rolled back here before anything of it runs again. It never imports
# staged code before that choice, and nothing in it depends on staged code (so it imports
# nothing of ours at the top). On a ROMFS board this module alone is a file (the factory's
# firmware/main.mpy beside the board's main.py): it mounts the slot's half of the ROMFS
# partition, whose image holds everything else.
import gc
import json
import os
import sys


def mount(state_dir, n):
    """Mount the ROMFS image of slot ``n`` at /rom, first on sys.path; False where that half
    holds no image (a board whose bundle is files). A board maps its ROMFS partition
    (MicroPython >= 1.25: vfs.rom_ioctl; an image at its start is mounted at /rom at power-on);
    slot 1 runs from the partition's second half, 0 and 2 from the first (firmware/ota.py). The
    half chosen is looked at, not the power-on mount: a power cut while slot 2 was written
    leaves the first half torn and slot 1 still to boot. The unix port has no partition: the
    file romfs-partition in the meter's folder stands in for it, the half read into the heap.
    (Literals here are long ones: a booted meter holds each short one as a name.)"""
    try:
        import vfs
    except ImportError:
        return False  # CPython
    if hasattr(vfs, "rom_ioctl"):
        part = vfs.rom_ioctl(2, 0)
        if type(part) is int:
            return False  # an error number: no romfs partition
        part = memoryview(part)
        image = part[len(part) // 2:] if n & 1 else part[:len(part) // 2]
    else:  # the unix port
        try:
            f = open((state_dir + "/" if state_dir else "") + "romfs-partition", "rb")
        except OSError:
            return False
        with f:
            half = f.seek(0, 2) // 2
            f.seek(half if n & 1 else 0)
            image = f.read(half)
    try:
        image = vfs.VfsRom(image)
    except OSError:
        return False  # no image in that half
    try:
        vfs.umount("/rom")
    except OSError:
        pass  # nothing mounted there at power-on
    vfs.mount(image, "/rom")
    sys.path.insert(0, "/rom")
    return True


def boot(path, state_dir=None):
    """(config, register plans) from the config file at ``path`` (with remote settings and a
    rotated key from ``state_dir``: firmware/config.py), with the boot-only modules unloaded.
    A plan file beside the config (regplan.json, from the host tools) saves loading the
    register maps at all."""
    from firmware import config
    cfg = config.load(path, state_dir)
    plans = config.load_plans(path[:-len("config.json")] + "regplan.json", cfg["modbus"])
    if plans is None:
        from firmware import regmap
        plans = regmap.build(cfg["modbus"])
    for name in ("firmware.config", "protocols.devconfig", "firmware.regmap",
                 "protocols.registers"):
        sys.modules.pop(name, None)
        pkg, _, attr = name.rpartition(".")
        parent = sys.modules.get(pkg)
        if parent is not None and hasattr(parent, attr):
            delattr(parent, attr)
    return cfg, plans


def write_atomic(path, p):
    # The OTA pointer, as firmware/files.py writes (temporary file, then rename: atomic on
    # LittleFS), without importing anything that a slot may replace.
    with open(path + ".tmp", "w") as f:
        f.write(json.dumps(p))
    os.rename(path + ".tmp", path)


def main(argv=None):
    argv = sys.argv if argv is None else argv
    cfg_path = argv[1] if len(argv) > 1 else "config.json"
    state_dir = argv[2] if len(argv) > 2 else (cfg_path.rsplit("/", 1)[0] if "/" in cfg_path else "")
    import asyncio

    # The pointer: [slot, prev, trial, version, refused, prev_version] (firmware/ota.py).
    # Every literal here is longer than ten characters: shorter ones would be new interned
    # names of a booted meter (firmware/README.md, "Memory").
    ota = (state_dir + "/" if state_dir else "") + "ota/pointer"
    p = None
    try:
        with open(ota) as f:
            p = json.loads(f.read())
    except Exception:  # noqa: BLE001 - no pointer: never updated, the factory bundle runs
        pass
    if type(p) is not list or len(p) != 6:
        p = None  # nothing else is ever written there; anything else boots the factory bundle
    if p and p[2]:
        # A boot on trial: the last one allowed rolls back instead (the bundle kept crashing).
        if p[2] == 1:
            print("ota: version %d used up its boots on trial: rolled back" % p[3])
            p = [p[1], 0, 0, p[5], p[3], 0]
        else:
            p = p[:2] + [p[2] - 1] + p[3:]
        write_atomic(ota, p)
    slot = p[0] if p else 0
    try:
        rom = mount(state_dir, slot)
        if slot and not rom:
            sys.path.insert(0, ota[:-7] + str(slot))
        if slot or rom:
            for name in list(sys.modules):
                if name.startswith("firmware") or name.startswith("protocols"):
                    del sys.modules[name]
        if slot:
            print("ota: slot %d, version %d, trial %d" % (slot, p[3], p[2]))
        from firmware.app import App
        from firmware.hal import Board
        cfg, plans = boot(cfg_path, state_dir)
    except Exception:
        if not (p and p[0]):
            raise
        # The slot's bundle does not import or boot: back to the previous one, from a reset.
        write_atomic(ota, [p[1], 0, 0, p[5], p[3], 0])
        print("ota: slot %d, version %d, fails to boot: rolled back" % (p[0], p[3]))
        try:
            import machine
            machine.reset()
        except (ImportError, AttributeError):
            pass
        sys.exit(3)  # the unix port: the supervisor restarts it, like hal_unix Board.reset
    cfg["ota_pointer"] = p
    gc.collect()
    app = App(cfg, Board(cfg, state_dir), plans)
    asyncio.run(app.run())
    return app


if __name__ == "__main__":
    main()
