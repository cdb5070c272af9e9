# Unloading what a meter imports only on demand (firmware/ota.py for an update, firmware/remote.py
# for a command, with their protocol modules): dropped from sys.modules and from their package,
# so their code and data go back to the heap once nothing refers to them. This module too.
import sys


def unload(names):
    for name in names + ("protocols.downlink", "firmware.ondemand"):
        sys.modules.pop(name, None)
        pkg, _, attr = name.rpartition(".")
        parent = sys.modules.get(pkg)
        if parent is not None and hasattr(parent, attr):
            delattr(parent, attr)
