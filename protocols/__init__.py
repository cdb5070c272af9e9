# Wire formats shared by firmware, gateway and simulator.
# Runs on MicroPython and CPython: no typing at run time, no dataclasses, no f-strings.
#
# const(): MicroPython's compiler folds `_NAME = const(value)` into the code that uses it, so a
# private constant costs the device neither a name nor a module entry. Modules here and in the
# firmware take it from this package (`from protocols import const`), which gives CPython a
# stand-in that returns the value.
try:
    from micropython import const
except ImportError:  # CPython
    def const(value):
        return value
