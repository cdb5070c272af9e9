# Over-the-air update on the meter (issue 13): take an offered bundle into a staging slot, verify
# it, switch to it, and keep it only once the gateway has acknowledged a reading made by it.
#
# Not resident: app.py imports this module when an offer arrives (or on a boot on trial) and it
# unloads itself when done, so a meter that is not being updated pays nothing for it (names
# included: tests/firmware/test_memory.py). The boot side, which picks the slot to run, is the
# factory firmware/main.py: it never imports staged code before it has chosen to run it.
#
# Flash layout (the meter's folder; LittleFS on a board):
#   ota/pointer   [slot, prev, trial, version, refused, prev_version], written via temporary
#                 file + rename (LittleFS renames atomically), read by firmware/main.py at boot.
#                 slot 0 is the factory bundle (the board's /firmware and /protocols), 1 and 2
#                 the staging slots ota/1/ and ota/2/; trial: boots left before the new bundle
#                 counts as failed (0: committed); refused: the last version rolled back.
#   ota/<n>/firmware/..., ota/<n>/protocols/...   a whole bundle, as `tmeter fw build` makes it
#   ota/<n>/manifest.txt   the release's file list (file 0, protocols/ota.py), read back one
#                 line at a time: the list is never held in the heap whole
#
# A ROMFS board (its bundle runs in place from a ROMFS image, MicroPython >= 1.25) takes a
# ROMFS release, one image, into a half of its ROMFS partition: slot 1 is the second half,
# slots 0 (the image flashed at the factory) and 2 the first. A slot is never the running one,
# so the half written is never the half mounted; firmware/main.py mounts the pointer's half.
# The partition is written by firmware/otaimage.py, imported only for an image.
#
# Memory (issue 13; the figures in firmware/README.md, "Over-the-air update"): what a meter
# holds while it takes an update is this module, protocols/ota.py, the offer (nine small
# fields) and one chunk at a time: CHUNK bytes, whose MQTT packet and payload are the largest
# blocks of an update (0.4 KB each; 1 KB chunks no longer fit a running meter's fragmented
# heap), decoded in place, the heap collected after every chunk. Module constants are const()
# and functions few: each name is kept by the interpreter for good.
#
# Crash safety, the same rule as firmware/outbox.py: the pointer is the only file that decides
# what boots, and it changes in one rename. Until that rename the staging slot is scratch (a
# power cut mid-download leaves a torn slot nobody boots; the next offer wipes it); after it the
# new bundle boots on trial and firmware/main.py rolls back by itself when the trial boots run
# out (a bundle that crashes) or when it fails to import; run() below rolls back when no reading
# of the new boot is acknowledged within ota_trial_s.
import gc
import hashlib
import json
from binascii import hexlify, unhexlify

from protocols import const
from protocols import ota as msgs
from protocols.errors import ProtocolError

CHUNK = 256          # bytes per request (see "Memory" above)
WAIT_MS = 3000       # for each answer
_POINTER = const("ota/pointer")
_TRIAL = const(3)    # the pointer's trial at the switch: two boots on trial, the third rolls back
_TRIES = const(5)    # requests of one chunk before the update is abandoned
_BLOCK = const(512)  # read size when hashing a staged file again
_LIST = const("manifest.txt")  # the release's file 0 in the slot (no module: never imported)

_job = None          # the update in progress (one at a time)


def pointer(board):
    """The pointer as a list, [0, 0, 0, 0, 0, 0] if there is none (never updated)."""
    try:
        p = json.loads(board.read(_POINTER))
        if type(p) is list and len(p) == 6:
            return p
    except Exception:  # noqa: BLE001 - absent; a torn one cannot exist (rename)
        pass
    return [0, 0, 0, 0, 0, 0]


def write_pointer(board, p):
    board.mkdir("ota")
    board.write_atomic(_POINTER, json.dumps(p).encode())


def _count(app, name):
    app.c[name] = app.c.get(name, 0) + 1


def _unload():
    # Drop this module and the protocol's: their code and data go back to the heap.
    if _job is None:
        from firmware.ondemand import unload
        unload(("firmware.ota", "protocols.ota", "firmware.otaimage", "firmware.romfile"))


# -- on the meter's down topic -----------------------------------------------------------------
def receive(app, payload):
    """A message on tm/v1/<c>/ota/<meter>/down: an offer or a chunk."""
    gc.collect()
    try:
        if msgs.kind(payload) == "chunk":
            if _job is not None:
                _job.take(payload)
            return
        offer(app, payload)
    except ProtocolError as e:
        _count(app, "ota_bad")
        app.board.log("ota: refused: " + str(e))
    if _job is None:
        _unload()


def offer(app, payload):
    global _job
    cfg = app.cfg
    key = cfg.get("release_key")
    if key is None:
        raise ProtocolError("unknown_key", "no release key provisioned")
    m = msgs.decode_offer(payload, cfg.get("release_kid") or 1, unhexlify(key))
    board = app.board
    if board.runtime == "cpython":
        raise ProtocolError("bad_target", "no updates of a CPython fleet process")
    target = "xtensawin" if board.runtime == "esp32" else "unix"
    if __file__.startswith("/rom"):
        target += "-romfs"  # it runs in place from an image and takes images only
    if m["target"] != target:
        raise ProtocolError("bad_target", "a %s bundle on a %s meter" % (m["target"], target))
    v = m["version"]
    # Versions only go up: a replayed offer of the running or an older release is refused,
    # and so is the release this meter rolled back from (until a newer one is offered).
    if v <= app.c["fw"]:
        raise ProtocolError("stale", "version %d is not newer than %d" % (v, app.c["fw"]))
    p = pointer(board)
    if v == p[4]:
        raise ProtocolError("stale", "version %d was rolled back" % v)
    if _job is not None:
        if _job.version == v:
            return  # the offer again (the tool repeats it until the download starts)
        _job.task.cancel()
    import asyncio
    _job = Job(app, m, 2 if p[0] == 1 else 1)
    _job.task = asyncio.create_task(_job.run())
    board.log("ota: version %d offered, %d files into slot %d" % (v, m["files"], _job.slot))


def _wipe(board, path):
    import os
    for name in board.listdir(path):
        sub = path + "/" + name
        try:
            os.remove(board.path(sub))
        except OSError:
            _wipe(board, sub)
    try:
        os.rmdir(board.path(path))
    except OSError:
        pass


def _append(board, to, off, data):
    # One chunk onto the end of a staged file (LittleFS commits it when the file closes), or
    # into the image's half of the partition.
    if type(to) is str:
        with open(board.path(to), "ab") as f:
            f.write(data)
    else:
        to.put(off, data)


class Job:
    def __init__(self, app, m, slot):
        self.app = app
        self.m = m           # the offer
        self.version = m["version"]
        self.slot = slot
        self.dir = "ota/%d" % slot
        self.want = None     # (file, off, n) of the chunk awaited
        self.data = None
        self.task = None
        self.up = "tm/v1/%s/ota/%s/up" % (app.cfg["community"], app.meter_id)
        self.free = gc.mem_free()  # the least free heap seen after a chunk

    def take(self, payload):
        msg, data = msgs.decode_chunk(payload)
        w = self.want
        if w is None or msg["version"] != self.version or msg["file"] != w[0] \
                or msg["off"] != w[1]:
            return  # late or duplicate answer to an earlier request: not counted
        if len(data) != w[2]:
            raise ProtocolError("bad_chunk", "chunk of %d bytes, asked %d" % (len(data), w[2]))
        self.data = data
        self.want = None

    async def get(self, i, path, size):
        """File ``i`` of the release into ``path`` of the slot, each chunk asked again on
        silence (five times), hashed as it is written, checked against self.hex."""
        app = self.app
        board = app.board
        to = self.dir + "/" + path
        if path == msgs.IMAGE:
            from firmware.otaimage import Half
            to = self.half = Half(board.partition(), self.slot, size)
        else:
            parts = to.split("/")
            for k in range(3, len(parts)):
                board.mkdir("/".join(parts[:k]))
            with open(board.path(to), "wb"):
                pass
        h = hashlib.sha256()
        off = 0
        while off < size:
            n = min(CHUNK, size - off)
            for _ in range(_TRIES):
                self.data = None
                self.want = (i, off, n)
                # QoS 0 both ways (the tool answers so too): silence is asked again anyway,
                # and a PUBACK written just before the next message would hold it back (Nagle's
                # algorithm against the peer's delayed ACK: 40 ms on Linux) twice per chunk.
                await app.client.publish(self.up, msgs.request(app.meter_id, self.version,
                                                               i, off, n), 0)
                start = board.ticks_ms()
                while self.data is None and board.ticks_diff(board.ticks_ms(), start) < WAIT_MS:
                    await board.sleep_ms(20)
                if self.data is not None:
                    break
            else:
                raise ProtocolError("no_answer", "no chunk for %s at %d" % (path, off))
            _append(board, to, off, self.data)
            h.update(self.data)
            off += n
            self.data = None
            gc.collect()  # one chunk's message at a time: the heap stays unfragmented
            self.free = min(self.free, gc.mem_free())
        self.sum(h, path)

    def sum(self, h, path, f=None):
        # The hash ``h`` of file ``path`` (fed by get(), or here from the open file ``f``)
        # against the list's.
        if f is not None:
            while True:
                b = f.read(_BLOCK)
                if not b:
                    break
                h.update(b)
        if hexlify(h.digest()).decode() != self.hex:
            raise ProtocolError("bad_hash", path + (" on flash" if f else ""))

    async def run(self):
        global _job
        app = self.app
        board = app.board
        m = self.m
        try:
            board.mkdir("ota")
            _wipe(board, self.dir)
            board.mkdir(self.dir)
            # File 0, the list, checked against the signed offer. Then three readings of it
            # back from flash, one line at a time (protocols/ota.py entries(): the list is
            # never held whole): every line checked before a single file is fetched (a bad
            # list costs one download of 9 KB at most); each file fetched, hashed as written;
            # each file hashed again as it reads back: what boots is what was verified.
            self.hex = m["lsha"]
            await self.get(0, _LIST, m["lsize"])
            for step in (0, 1, 2):
                n = 0
                with open(board.path(self.dir + "/" + _LIST), "rb") as f:
                    for path, size, self.hex in msgs.entries(f, m):
                        n += 1
                        if step == 1:
                            await self.get(n, path, size)
                        elif step == 2 and path == msgs.IMAGE:
                            self.sum(hashlib.sha256(), path, self.half)
                        elif step:
                            with open(board.path(self.dir + "/" + path), "rb") as g:
                                self.sum(hashlib.sha256(), path, g)
            p = pointer(board)
            write_pointer(board, [self.slot, p[0], _TRIAL, self.version, p[4], p[3]])
            board.log("ota: version %d staged in slot %d, %d bytes of heap free at least,"
                      " restarting on trial" % (self.version, self.slot, self.free))
            board.reset()
        except (ProtocolError, OSError, MemoryError) as e:  # OSError: flash full or failing
            _count(app, "ota_bad")
            board.log("ota: update to %d abandoned: %s" % (self.version, e))
            _wipe(board, self.dir)  # scratch: nothing boots it
        finally:
            if _job is self:
                _job = None
            _unload()


# -- on a boot on trial ------------------------------------------------------------------------
async def run(app):
    """On a boot on trial: roll back if no reading of this boot is acknowledged in time."""
    board = app.board
    limit = (app.cfg.get("ota_trial_s") or 600) * 1000
    start = board.ticks_ms()
    board.log("ota: version %d on trial, %d boots left" % (app.c["fw"], app.c["ota_trial_n"] - 1))
    while app.c.get("ota_trial_n"):
        if board.ticks_diff(board.ticks_ms(), start) >= limit:
            p = pointer(board)
            # Back to the previous slot, the failed version refused (as firmware/main.py).
            write_pointer(board, [p[1], 0, 0, p[5], p[3], 0])
            board.log("ota: version %d not acknowledged in %d s, rolling back"
                      % (app.c["fw"], limit // 1000))
            board.reset()
        await board.sleep_ms(500)


def ack(app):
    """The gateway acknowledged a reading of this boot: the new bundle works, keep it."""
    board = app.board
    p = pointer(board)
    if p[2]:
        p[2] = 0
        write_pointer(board, p)
        board.log("ota: version %d committed" % p[3])
    app.c["ota_trial_n"] = 0
    _count(app, "ota_ok")
    _unload()
