# The unix port's stand-in for a board's ROMFS partition: the file romfs-partition in the meter's
# folder, behind the block protocol of the object `vfs.rom_ioctl(2, 0)` is on an ESP32 (an
# esp32.Partition of 4 KB blocks: ioctl 4 block count, 5 block size, 6 erase; readblocks and
# writeblocks with an offset). firmware/main.py mounts a half of it, firmware/ota.py writes the
# other. It behaves as NOR flash does: an erase sets a block's bits, a write can only clear
# them, so an image written without its erase reads back damaged (and fails its hash), as it
# would on a board. Imported only while an update is taken (hal_unix Board.partition()), and
# the module itself is the partition object, so a booted meter holds none of its names.
from protocols import const

_BS = const(4096)
_PIECE = const(256)  # bytes per file operation: no block-sized buffer in a meter's heap
_old = None          # what a write lands on, read first (NOR flash: a write only clears bits)
path = None          # the file, set by hal_unix Board.partition()


def ioctl(op, arg):
    if op == 4:
        with open(path, "rb") as f:
            return f.seek(0, 2) // _BS
    if op == 5:
        return _BS
    if op == 6:
        ones = b"\xff" * _PIECE
        with open(path, "r+b") as f:
            f.seek(arg * _BS)
            for _ in range(_BS // _PIECE):
                f.write(ones)
        return 0
    return None


def readblocks(block, buf, off=0):
    with open(path, "rb") as f:
        f.seek(block * _BS + off)
        f.readinto(buf)


def writeblocks(block, buf, off=0):
    # In place, in one buffer made once: a board's writeblocks allocates nothing either.
    global _old
    if _old is None:
        _old = bytearray(_PIECE)
    at = block * _BS + off
    with open(path, "r+b") as f:
        for i in range(0, len(buf), _PIECE):
            k = min(_PIECE, len(buf) - i)
            old = memoryview(_old)[:k]
            f.seek(at + i)
            f.readinto(old)
            for j in range(k):
                old[j] &= buf[i + j]
            f.seek(at + i)
            f.write(old)
