# The meter's signing key pair (issue 15), made on the device at provisioning:
#
#     micropython -m firmware.keygen FOLDER SKID      (unix port; on a board: `tmeter fw keygen`)
#
# writes the private key to FOLDER/signing-key as "<skid>:<64 hex>" and prints the public key
# (65-byte uncompressed SEC1, hex) on a line "PUB <hex>": only that leaves the device, and the
# host tool enrols it in the gateway registry under SKID. An existing signing-key is never
# replaced (its readings in the queue are signed with it, and the registry holds its public
# half): a board that needs a new key is factory-reset first.
#
# Entropy: os.urandom. On an ESP32 that is the hardware RNG (esp_fill_random), which is a true
# RNG while the radio runs or the bootloader's entropy source is on; p256.keypair refuses a
# dead one (one repeated byte). Never loaded by a running meter.
import os
import sys

from protocols import p256
from protocols.signature import KEY_FILE as NAME


def make(folder, skid):
    """Make and store the key pair; returns the public key, or None if a key exists."""
    path = (folder + "/" if folder else "") + NAME
    try:
        os.stat(path)
        return None
    except OSError:
        pass
    d, pub = p256.keypair(os.urandom(32))
    with open(path + ".tmp", "w") as f:
        f.write("%d:%064x" % (skid, d))
    os.rename(path + ".tmp", path)
    return pub


def main(argv):
    if len(argv) != 3 or not argv[2].isdigit() or not 1 <= int(argv[2]) <= 0xFFFF:
        print("usage: firmware.keygen FOLDER SKID (1..65535)")
        sys.exit(2)
    pub = make(argv[1], int(argv[2]))
    if pub is None:
        print("keygen: %s/%s exists: this meter has its key (factory-reset to replace it)"
              % (argv[1], NAME))
        sys.exit(1)
    print("PUB " + "".join("%02x" % b for b in pub))


if __name__ == "__main__":
    main(sys.argv)
