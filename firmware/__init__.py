# Transactive meter firmware (MicroPython). Device code only: host tooling lives in gateway/.
