# Store-and-forward queue of signed readings on flash.
#
# One file per record, q/<seq>-<boot>, holding the exact payload bytes that are published.
# Each file is written once (temporary file + rename) and never touched again, so a power cut
# while writing can at worst leave a stray temporary file: older records are never at risk.
# The payload carries its own HMAC tag, which is checked again before sending, so a record
# damaged on flash is detected (counted as q_bad) instead of being sent.
#
# Records leave the queue only when the gateway acknowledges them after storing them (ack
# res "stored" or "duplicate"), or when it rejects them (any other res: counted, dropped).
#
# Full-queue policy: the queue holds at most ``queue_max`` records. Adding one to a full queue
# first drops the OLDEST record (the newest data is worth most to settlement), counts it in
# the status counter q_drop, and the new record carries FLAG_QUEUE_OVERFLOW so the gateway
# knows data is missing before it.
from binascii import unhexlify

from protocols import auth

DIR = "q"


def _name(seq, boot):
    return DIR + "/" + ("%010d" % seq) + "-" + str(boot)


class Outbox:
    def __init__(self, board, key, limit, counters):
        self.board = board
        self.key = key
        self.limit = limit
        self.c = counters
        self.seqs = []        # queued sequence numbers, oldest first
        self.boots = {}       # seq -> boot of that record

    def load(self):
        """Index the queue after a (re)boot; drops stray temporary files of a torn write."""
        self.board.mkdir(DIR)
        found = []
        for name in self.board.listdir(DIR):
            if name.endswith(".tmp"):
                self.board.remove(DIR + "/" + name)
                continue
            dash = name.find("-")
            try:
                found.append((int(name[:dash]), int(name[dash + 1:])))
            except ValueError:
                self.board.remove(DIR + "/" + name)
        found.sort()
        for seq, boot in found:
            self.seqs.append(seq)
            self.boots[seq] = boot
        return self

    def __len__(self):
        return len(self.seqs)

    def make_room(self):
        """Drop oldest records until one more fits; returns how many were dropped."""
        dropped = 0
        while len(self.seqs) >= self.limit:
            self._forget(self.seqs[0])
            dropped += 1
        self.c["q_drop"] += dropped
        return dropped

    def put(self, seq, boot, payload):
        self.board.write_atomic(_name(seq, boot), payload)
        self.seqs.append(seq)
        self.boots[seq] = boot

    def get(self, seq):
        """The payload of queued record ``seq``, or None if it is gone or fails its tag."""
        boot = self.boots.get(seq)
        if boot is None:
            return None
        payload = self.board.read(_name(seq, boot))
        if payload is None or not self._intact(payload):
            self.c["q_bad"] += 1
            self._forget(seq)
            return None
        return payload

    def _intact(self, payload):
        cut = payload.rfind(b"\n")
        colon = payload.find(b":", cut)
        if cut < 0 or colon < 0:
            return False
        tag = payload[colon + 1:]
        try:
            want = auth.hmac_sha256(self.key, payload[:cut])
            return auth.equal(want, unhexlify(tag))
        except Exception:  # noqa: BLE001 - malformed hex is damage too
            return False

    def ack(self, seq, boot):
        """Remove an acknowledged record; False if it was not queued (late duplicate ack)."""
        if self.boots.get(seq) != boot:
            return False
        self._forget(seq)
        return True

    def _forget(self, seq):
        boot = self.boots.pop(seq, None)
        if boot is not None:
            self.board.remove(_name(seq, boot))
        try:
            self.seqs.remove(seq)
        except ValueError:
            pass

    def newest(self):
        """The newest queued record as a dict (for State.recover), or None."""
        import json
        while self.seqs:
            payload = self.get(self.seqs[-1])
            if payload is not None:
                return json.loads(payload[:payload.rfind(b"\n")])
        return None
