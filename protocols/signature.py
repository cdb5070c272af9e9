# The meter's signature on a reading (issue 15): ECDSA P-256/SHA-256 (protocols/p256.py) over
# the exact canonical body, under the meter's own key pair, whose private half never leaves
# the device. A signed reading carries it as one line between the body and the tag trailer:
#
#     <body> "\n" "sig " <skid decimal> ":" <128 lowercase hex r||s> "\n" <kid> ":" <64 hex tag>
#
# skid names the meter's signing key (its enrolment in the gateway registry: a replaced board
# enrols key 2); the signature covers SHA-256(<body>) and nothing else, so the body and its
# signature verify with standard tools (openssl dgst -sha256 -verify) against the meter's
# public key alone. The HMAC trailer (protocols/trailer.py) still covers everything before it,
# signature line included: it is the cheap check that runs first on the gateway (an ECDSA
# verification costs a hundred HMACs) and the one the meter can afford on its own queue
# (firmware/outbox.py), while the signature is what no one but the meter can make.
#
# One spelling only, the trailer's (trailer.split): a key id without leading zeros, 128
# lowercase hex digits.
# Canonical JSON has no newline, so a body with a newline in it carries a signature line.
import hashlib
from binascii import hexlify

from protocols import trailer
from protocols.errors import ProtocolError

SIG_LEN = 64
# The private key in the meter's folder (firmware/keygen.py). Longer than ten characters: on
# MicroPython a shorter literal would be one more interned name of a booted meter.
KEY_FILE = "signing-key"


def digest(body):
    """The hash the signature signs: SHA-256 of the exact body bytes."""
    return hashlib.sha256(body).digest()


def attach(body, skid, sig):
    """``body`` followed by its signature line: what the meter tags with its HMAC key."""
    return b"".join((body, b"\nsig ", str(skid).encode(), b":", hexlify(sig)))


def split(signed):
    """(body, skid, sig) of a tagged body; skid and sig are None when it carries no signature
    line. Raises ProtocolError("bad_frame") for a line not in the one spelling above."""
    cut = signed.rfind(b"\n")
    if cut < 0:
        return signed, None, None
    line = signed[cut + 1:]
    if line[:4] == b"sig ":
        try:
            _empty, skid, sig = trailer.split(b"\n" + line[4:], SIG_LEN)  # the trailer's spelling
            return signed[:cut], skid, sig
        except ProtocolError:
            pass
    raise ProtocolError("bad_frame", "malformed signature line")
