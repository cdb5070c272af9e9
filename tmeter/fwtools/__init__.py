"""Host-side firmware tools: build and deploy the meter firmware (`build`), and run it, or any
code, on this machine under the MicroPython unix port or CPython (`runner`)."""

from pathlib import Path

# The folder holding the firmware/ and protocols/ packages: the checkout, or site-packages.
ROOT = Path(__file__).resolve().parents[2]
