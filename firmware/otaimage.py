# Over-the-air update of a ROMFS board (firmware/ota.py): the release's image written into the
# slot's half of the board's ROMFS partition, as `mpremote romfs deploy` writes a partition
# (esp32.Partition's block protocol: each 4 KB block erased, then written in place), and read
# back through the same protocol, which reads the flash itself, not the mapping the running
# image is read through. Imported only for an image: a meter that takes files never loads it.
from protocols.errors import ProtocolError


class Half:
    """The slot's half of the ROMFS partition ``part`` (block protocol: ioctl 4 block count,
    5 block size, 6 erase; readblocks and writeblocks with an offset), written from its start
    and read back like a file."""

    def __init__(self, part, slot, size):
        self.p = part
        self.bs = part.ioctl(5, 0)
        n = part.ioctl(4, 0) // 2
        if size > n * self.bs:
            raise ProtocolError("too_large", "an image of %d bytes, a half of %d"
                                % (size, n * self.bs))
        self.b0 = n if slot & 1 else 0
        self.size = size
        self.at = 0

    def put(self, off, data):
        # Written in order from 0: a block is erased when the first byte of it comes.
        while data:
            b, o = divmod(off, self.bs)
            k = min(len(data), self.bs - o)
            if not o:
                self.p.ioctl(6, self.b0 + b)
            self.p.writeblocks(self.b0 + b, data[:k], o)
            data = data[k:]
            off += k

    def read(self, n):
        b, o = divmod(self.at, self.bs)
        buf = bytearray(min(n, self.bs - o, self.size - self.at))
        if buf:
            self.p.readblocks(self.b0 + b, buf, o)
        self.at += len(buf)
        return buf
