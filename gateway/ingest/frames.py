"""The pipes between the daemon and its pump processes: how they are framed, sized and closed.

The daemon (gateway/ingest/pump.py) and a pump (gateway/ingest/pump_process.py) talk over the
pump's stdin and stdout in frames: a 4-byte big-endian length, then a pickled ``(kind, value)``.
Pickle is safe here because both ends are this package, one spawned by the other; message
payloads cross as opaque bytes.

    daemon -> pump   ("start", PumpSettings as a dict), once, first
                     ("acks", [codec.AckOrder, ...])
    pump -> daemon   ("up", bool)                      subscribed (uplink) / connected, or lost
                     ("messages", [(topic, payload), ...]), or codec.Verified tuples
                     ("count", {name: n})              e.g. acks dropped while disconnected

End of file on its stdin tells a pump to finish what it was given (within ``CLOSE_WAIT_S``),
disconnect and exit; so a pump also ends when the daemon dies, whatever kills it.
"""

from __future__ import annotations

import pickle
import struct
from dataclasses import dataclass, field
from typing import Any

HEADER = struct.Struct("!I")
MAX_FRAME = 64 << 20  # a frame larger than this is a broken pipe, not a message batch
# Room in the pipe and the daemon's reader, so the uplink keeps taking messages from the broker
# while the daemon's event loop waits its turn for the interpreter (its database thread holds
# the GIL for milliseconds at a time); 64 KiB pipes stalled the uplink for half of its time.
PIPE_SIZE = 1 << 20
READER_LIMIT = 4 << 20
F_SETPIPE_SZ = 1031  # Linux fcntl; elsewhere the default size stays
CLOSE_WAIT_S = 10.0  # a pump's bound on sending what it holds once its stdin ends


@dataclass
class PumpSettings:
    """What a pump needs to know; sent as its first frame, so no password shows in ``ps``."""

    name: str
    host: str
    port: int
    client_id: str
    subscribe: list[str] = field(default_factory=list)  # topic filters, QoS 1; none: publish only
    user: str | None = None
    password: str | None = None
    tls: bool = False
    ca: str | None = None
    keepalive_s: int = 30
    max_inflight: int = 20  # QoS 1 publishes awaiting PUBACK
    log_level: str = "WARNING"
    database: str | None = None  # the gateway's: meter keys to decode messages and tag acks with
    community: str = ""  # whose meters' ack topics the acks go to
    ack_qos: int = 0


def frame(kind: str, value: Any) -> bytes:
    data = pickle.dumps((kind, value), protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def frame_length(header: bytes | bytearray) -> int:
    """The length a frame header announces; an absurd one is a broken pipe, not a batch."""
    (n,) = HEADER.unpack_from(header)
    if n > MAX_FRAME:
        raise ValueError(f"frame of {n} bytes")
    return n


class FrameBuffer:
    """Splits a byte stream into frames."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[str, Any]]:
        self.buf += data
        out = []
        while len(self.buf) >= HEADER.size:
            n = frame_length(self.buf)
            if len(self.buf) < HEADER.size + n:
                break
            out.append(pickle.loads(self.buf[HEADER.size:HEADER.size + n]))
            del self.buf[:HEADER.size + n]
        return out


def grow_pipe(fd: int) -> None:
    try:
        import fcntl  # noqa: PLC0415 - POSIX only

        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
    except (ImportError, OSError):
        pass  # not Linux, not a pipe, or above /proc/sys/fs/pipe-max-size: the default will do
