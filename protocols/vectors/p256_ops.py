# Operations the P-256 signature vectors exercise (see runner.py): protocols/p256.py. Integers
# and bytes travel as hex strings; a message as text ("msg") or hex ("msg_hex") is hashed with
# SHA-256 first, or a raw "hash_hex" (any length, to test the length check) is taken as it is.
# A ValueError comes back as {"value_error": message}: p256 raises no ProtocolError.
from binascii import hexlify, unhexlify

from protocols import p256


def _hex(b):
    return hexlify(b).decode()


def _hash(v):
    if "hash_hex" in v:
        return unhexlify(v["hash_hex"])
    return p256.sha256(unhexlify(v["msg_hex"]) if "msg_hex" in v else v["msg"].encode())


def _guard(f):
    def run(v):
        try:
            return f(v)
        except ValueError as e:
            return {"value_error": str(e)}
    return run


def _public_key(v):
    return _hex(p256.public_key(int(v["d"], 16)))


def _sign(v):
    return _hex(p256.sign(int(v["d"], 16), _hash(v)))


def _sign_steps(v):
    # The stepwise signature, driven the way an asyncio task drives it: the same bytes.
    for s in p256.sign_steps(int(v["d"], 16), _hash(v)):
        if s:
            return _hex(s)


def _verify(v):
    return p256.verify(unhexlify(v["pub"]), _hash(v), unhexlify(v["sig"]))


def _keypair(v):
    d, q = p256.keypair(unhexlify(v["entropy"]))
    return {"d": "%064x" % d, "pub": _hex(q)}


OPS = {
    "public_key": _guard(_public_key),
    "sign": _guard(_sign),
    "sign_steps": _guard(_sign_steps),
    "verify": _guard(_verify),
    "keypair": _guard(_keypair),
}
