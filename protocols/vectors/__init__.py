# Shared test vectors: JSON files run by runner.py under MicroPython and CPython alike.
