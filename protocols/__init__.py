# Wire formats shared by firmware, gateway and simulator.
# Runs on MicroPython and CPython: no typing at run time, no dataclasses, no f-strings.
