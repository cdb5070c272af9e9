# Entry point. A board's /main.py is `from firmware.main import main; main()`; on the unix
# port or CPython:  micropython -m firmware.main [CONFIG [STATE_DIR]]
#
# Load order is part of the memory budget: configuration and register maps are read by
# boot-only modules that are unloaded again before the application is imported, so their
# memory is reused instead of fragmenting the heap.
import gc
import sys


def _unload(name):
    sys.modules.pop(name, None)
    pkg, _, attr = name.rpartition(".")
    parent = sys.modules.get(pkg)
    if parent is not None and hasattr(parent, attr):
        delattr(parent, attr)


def boot(cfg_path):
    """(config, register plans), with the boot-only modules unloaded. A plan file beside the
    config (regplan.json, from the host tools) saves loading the register maps at all."""
    import json

    from firmware import config, regmap
    cfg = config.load(cfg_path)
    plans = None
    try:
        with open(cfg_path[:-len("config.json")] + "regplan.json") as f:
            plans = regmap.load(cfg["modbus"], json.load(f))
    except (OSError, ValueError, KeyError):
        pass
    if plans is None:
        plans = regmap.build(cfg["modbus"])
    _unload("firmware.config")
    _unload("firmware.regmap")
    _unload("protocols.registers")
    return cfg, plans


def main(argv=None):
    argv = sys.argv if argv is None else argv
    cfg_path = argv[1] if len(argv) > 1 else "config.json"
    state_dir = argv[2] if len(argv) > 2 else (cfg_path.rsplit("/", 1)[0] if "/" in cfg_path else "")
    cfg, plans = boot(cfg_path)
    gc.collect()
    import asyncio

    from firmware.app import App
    from firmware.hal import Board
    app = App(cfg, Board(cfg, state_dir), plans)
    asyncio.run(app.run())
    return app


if __name__ == "__main__":
    main()
