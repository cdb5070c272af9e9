# Stand-in for the ESP32 port's `esp32` module. Its presence is what firmware/hal.py takes for
# "on a board" (the unix port has no such module), so firmware/hal_esp32.py runs under test.
