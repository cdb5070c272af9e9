# The unix port's own built-in module of a name this folder shadows (time, socket): imported
# with the search path emptied, so the stand-in can wrap it.
import sys


def builtin(name):
    saved = sys.path[:]
    mine = sys.modules.pop(name, None)
    sys.path.clear()
    try:
        return __import__(name)
    finally:
        sys.path.extend(saved)
        if mine is not None:
            sys.modules[name] = mine
        else:
            sys.modules.pop(name, None)


def state(name, default=""):
    """A file in the board's folder (the process's cwd) that the test scripts: the link state,
    the reset cause of this boot. Absent: ``default``."""
    try:
        with open("esp32_" + name) as f:
            return f.read().strip()
    except OSError:
        return default


def put(name, text):
    with open("esp32_" + name, "w") as f:
        f.write(text)
