# Entry point. A board's /main.py is `from firmware.main import main; main()`; on the unix
# port or CPython:  micropython -m firmware.main [CONFIG [STATE_DIR]]
#
# Load order is part of the memory budget: the application is imported first, then the
# configuration and register plans are read by boot-only modules that are unloaded again. The
# names in config.json and regplan.json then parse to the application's own qstrs instead of
# new strings, and the boot-only code, above the application, leaves one free region behind.
import gc
import sys

from protocols import const

_BOOT_ONLY = const(("firmware.config", "protocols.devconfig", "firmware.regmap",
                    "protocols.registers"))


def boot(path):
    """(config, register plans) from the config file at ``path``, with the boot-only modules
    unloaded. A plan file beside the config (regplan.json, from the host tools) saves loading
    the register maps at all."""
    from firmware import config
    cfg = config.load(path)
    plans = config.load_plans(path[:-len("config.json")] + "regplan.json", cfg["modbus"])
    if plans is None:
        from firmware import regmap
        plans = regmap.build(cfg["modbus"])
    for name in _BOOT_ONLY:
        sys.modules.pop(name, None)
        pkg, _, attr = name.rpartition(".")
        parent = sys.modules.get(pkg)
        if parent is not None and hasattr(parent, attr):
            delattr(parent, attr)
    return cfg, plans


def main(argv=None):
    argv = sys.argv if argv is None else argv
    cfg_path = argv[1] if len(argv) > 1 else "config.json"
    state_dir = argv[2] if len(argv) > 2 else (cfg_path.rsplit("/", 1)[0] if "/" in cfg_path else "")
    import asyncio

    from firmware.app import App
    from firmware.hal import Board
    cfg, plans = boot(cfg_path)
    gc.collect()
    app = App(cfg, Board(cfg, state_dir), plans)
    asyncio.run(app.run())
    return app


if __name__ == "__main__":
    main()
