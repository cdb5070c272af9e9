"""Device signatures (issue 15, core): what an ECDSA P-256 signature of protocols/p256.py costs.

Prints the time per signature on CPython, the 64-bit and the 32-bit MicroPython unix ports,
beside `cryptography`'s deterministic ECDSA sign on CPython (the named peer, OpenSSL in C);
the longest pause between two steps of ``sign_steps`` (what an asyncio loop would wait); the
smallest ``-X heapsize`` in which the 32-bit port signs (protocols/ as mpy-cross bytecode, as
a board loads it); and the interned names and heap the module adds once imported. Nothing is
asserted here (tests/test_p256.py asserts the heap). Run: ``.venv/bin/python bench/p256.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives import hashes  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402

from protocols import p256  # noqa: E402
from tmeter.fwtools.build import mpy_cross  # noqa: E402
from tmeter.fwtools.runner import find_micropython, micropython_env  # noqa: E402

D = 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721  # RFC 6979 A.2.5
MODULES = ("protocols/__init__.py", "protocols/auth.py", "protocols/p256.py")
HEAPS_KB = range(4, 33)

# Runs under MicroPython: qstr pool and heap around the import, time per signature, longest
# step of sign_steps (the median of five signatures' longest: the machine is shared).
# micropython.qstr_info() prints "... n_qstr=N ...": parsed by the host.
UPY = """\
import gc, time, micropython
from protocols import auth
gc.collect()
micropython.qstr_info()
a0 = gc.mem_alloc()
from protocols import p256
gc.collect()
micropython.qstr_info()
a1 = gc.mem_alloc()
d = %d
h = p256.sha256(b"sample")
t = time.ticks_us()
for i in range(%d):
    s = p256.sign(d, h)
per = time.ticks_diff(time.ticks_us(), t) // %d
runs = []
for j in range(5):
    worst = 0
    n = 0
    last = time.ticks_us()
    for x in p256.sign_steps(d, h):
        worst = max(worst, time.ticks_diff(time.ticks_us(), last))
        n += 1
        last = time.ticks_us()
    runs.append(worst)
runs.sort()
print("RESULT", per, runs[2], n, a1 - a0, s == x)
"""
# The meter signs from a settled heap: gc.collect() after the import, as its loop runs.
SIGN = ("import gc\nfrom protocols import p256\ngc.collect()\n"
        "print(p256.sign(%d, p256.sha256(b'sample')).hex())\n" % D)


def build(out: Path) -> Path:
    """protocols/ modules p256 needs as portable bytecode, the way a board imports them."""
    for rel in MODULES:
        mpy_cross(Path(rel), out / Path(rel).with_suffix(".mpy"), None)
    return out


def upy(bits: int, script: str, path: Path | None, heap: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    """``script`` run from a file (``-c`` would hold its source in the heap it measures)."""
    env = micropython_env()
    if path is not None:
        env["MICROPYPATH"] = ".frozen:" + str(path)
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "run.py"
        file.write_text(script)
        cmd = [find_micropython(bits)] + (["-X", "heapsize=" + heap] if heap else [])
        return subprocess.run(cmd + [str(file)], env=env, capture_output=True, text=True,
                              timeout=300)


def on_upy(bits: int, path: Path | None, rounds: int = 20) -> dict[str, int]:
    out = upy(bits, UPY % (D, rounds, rounds), path)
    if out.returncode:
        raise RuntimeError(out.stdout + out.stderr)
    pools = [int(n) for n in re.findall(r"n_qstr=(\d+)", out.stdout)]
    per, worst, steps, heap, same = out.stdout.split("RESULT")[1].split()
    assert same == "True", "sign and sign_steps differ"
    return {"us": int(per), "pause_us": int(worst), "steps": int(steps), "heap": int(heap),
            "names": pools[1] - pools[0]}


def smallest_heap(path: Path) -> int | None:
    want = p256.sign(D, p256.sha256(b"sample")).hex()
    for kb in HEAPS_KB:
        out = upy(32, SIGN, path, f"{kb}k")
        if out.returncode == 0 and out.stdout.strip() == want:
            return kb
    return None


def on_cpython(rounds: int = 200) -> tuple[float, float]:
    h = p256.sha256(b"sample")
    t = time.perf_counter()
    for _ in range(rounds):
        p256.sign(D, h)
    ours = (time.perf_counter() - t) / rounds
    key = ec.derive_private_key(D, ec.SECP256R1())
    algo = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
    t = time.perf_counter()
    for _ in range(rounds * 10):
        key.sign(b"sample", algo)
    return ours, (time.perf_counter() - t) / (rounds * 10)


def main() -> None:
    ours, peer = on_cpython()
    print(f"CPython {sys.version.split()[0]}: p256.sign {ours * 1e3:.2f} ms, cryptography "
          f"{peer * 1e6:.0f} us (deterministic ECDSA, OpenSSL): ratio {ours / peer:.0f}x")
    with tempfile.TemporaryDirectory() as tmp:
        path = build(Path(tmp))
        for bits in (64, 32):
            for label, where in (("sources", None), ("bytecode", path)):
                r = on_upy(bits, where)
                print(f"MicroPython {bits}-bit ({label}): sign {r['us'] / 1e3:.1f} ms "
                      f"({r['us'] / 1e3 / (ours * 1e3):.1f}x CPython), longest step "
                      f"{r['pause_us']} us of {r['steps']} steps, module heap {r['heap']} B, "
                      f"names added {r['names']}")
        print(f"smallest -X heapsize that signs on the 32-bit port (bytecode): "
              f"{smallest_heap(path)} KB (tried {HEAPS_KB.start}..{HEAPS_KB.stop - 1} KB)")
    print(json.dumps({"cpython_ms": round(ours * 1e3, 3), "cryptography_us": round(peer * 1e6, 1)}))


if __name__ == "__main__":
    main()
