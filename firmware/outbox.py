# Store-and-forward queue of signed readings on flash.
#
# One file per record, q/<seq>-<boot>, holding the exact payload bytes that are published.
# Each file is written once (temporary file + rename) and never touched again, so a power cut
# while writing can at worst leave a stray temporary file: older records are never at risk.
# The payload carries its own tag trailer (protocols/trailer.py), checked again before sending
# exactly as the gateway checks it, so a record damaged on flash, trailer included, is detected
# (counted as q_bad) instead of being sent only to be refused.
#
# Records leave the queue only when the gateway acknowledges them after storing them (ack
# res "stored" or "duplicate"), or when it rejects them (any other res: counted, dropped).
#
# Full-queue policy: the queue holds at most ``queue_max`` records. Adding one to a full queue
# first drops the OLDEST record (the newest data is worth most to settlement), counts it in
# the status counter q_drop, and the new record carries FLAG_QUEUE_OVERFLOW so the gateway
# knows data is missing before it.
from array import array

from protocols import const, trailer

_DIR = const("q")


def _name(seq, boot):
    return _DIR + "/" + ("%010d" % seq) + "-" + str(boot)


class Outbox:
    def __init__(self, board, kid, key, limit, counters):
        self.board = board
        self.kid = kid
        self.key = key
        self.limit = limit
        self.c = counters
        # The index of the queue, oldest first: the first n entries of two arrays of u32 (seq and
        # boot are u32 on the wire) allocated once for the whole queue, so a queue filling up
        # during an outage never asks a fragmented heap for a bigger block.
        self._seq = array("I", bytes(4 * limit))
        self._boot = array("I", bytes(4 * limit))
        self.n = 0

    def load(self):
        """Index the queue after a (re)boot; drops stray temporary files of a torn write, and
        the oldest records beyond the queue's size (a smaller queue_max than before). Returns
        how many records were dropped (counted in q_drop, like make_room)."""
        self.board.mkdir(_DIR)
        found = []
        for name in self.board.listdir(_DIR):
            if name.endswith(".tmp"):
                self.board.remove(_DIR + "/" + name)
                continue
            dash = name.find("-")
            try:
                found.append((int(name[:dash]), int(name[dash + 1:])))
            except ValueError:
                self.board.remove(_DIR + "/" + name)
        found.sort()
        dropped = len(found) - self.limit if len(found) > self.limit else 0
        for seq, boot in found[:dropped]:
            self.board.remove(_name(seq, boot))
        for seq, boot in found[dropped:]:
            self._append(seq, boot)
        self.c["q_drop"] += dropped
        return dropped

    def __len__(self):
        return self.n

    def _append(self, seq, boot):
        self._seq[self.n] = seq
        self._boot[self.n] = boot
        self.n += 1

    def _find(self, seq):
        for i in range(self.n):
            if self._seq[i] == seq:
                return i
        return -1

    def has(self, seq):
        return self._find(seq) >= 0

    def oldest(self, k):
        """The sequence numbers of the ``k`` oldest queued records (a new, small list)."""
        return list(self._seq[:min(k, self.n)])

    def make_room(self):
        """Drop oldest records until one more fits; returns how many were dropped."""
        dropped = 0
        while self.n >= self.limit:
            self._forget(0)
            dropped += 1
        self.c["q_drop"] += dropped
        return dropped

    def put(self, seq, boot, payload):
        self.board.write_atomic(_name(seq, boot), payload)
        self._append(seq, boot)

    def get(self, seq):
        """The payload of queued record ``seq``, or None if it is gone or fails its tag."""
        i = self._find(seq)
        if i < 0:
            return None
        payload = self.board.read(_name(seq, self._boot[i]))
        if payload is None or not trailer.signed(payload, self.kid, self.key):
            self.c["q_bad"] += 1
            self._forget(i)
            return None
        return payload

    def ack(self, seq, boot):
        """Remove an acknowledged record; False if it was not queued (late duplicate ack)."""
        i = self._find(seq)
        if i < 0 or self._boot[i] != boot:
            return False
        self._forget(i)
        return True

    def _forget(self, i):
        # Remove entry i: its file, then close the gap (in place: no new list).
        self.board.remove(_name(self._seq[i], self._boot[i]))
        self.n -= 1
        for j in range(i, self.n):
            self._seq[j] = self._seq[j + 1]
            self._boot[j] = self._boot[j + 1]

    def newest(self):
        """The newest queued record as a dict (for State.recover), or None."""
        import json
        while self.n:
            payload = self.get(self._seq[self.n - 1])
            if payload is not None:
                return json.loads(trailer.split(payload)[0])
        return None
