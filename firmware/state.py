# Persistent device state: boot counter, next sequence number and the counter baseline (the
# meter counters the last closed interval ended with), so a reboot neither reuses a sequence
# number nor loses or double-counts energy; and the ledger checkpoint the meter witnesses, so a
# rollback while the meter was off is still caught (saved with the rest, once per interval: no
# write of its own).
#
# Written with Board.write_atomic (temporary file + rename), so a power cut leaves either the
# old or the new state. The record queue is written before the state, so after a crash the
# queue may be one record ahead: recover() takes the newer of the two.
import json

from protocols import const

_NAME = const("state.json")


class State:
    def __init__(self, board):
        self.board = board
        self.boot = 0
        self.seq = 0          # the next record's sequence number
        self.iv = None        # last closed interval
        self.imp = None       # baseline import counter, Wh (None: never read)
        self.exp = None
        self.t_ms = None      # time of the baseline read
        self.cp = None        # {"size", "root"} of the largest checkpoint seen (None: none)

    def load(self):
        raw = self.board.read(_NAME)
        if raw:
            try:
                d = json.loads(raw)
                self.boot = d["boot"]
                self.seq = d["seq"]
                self.iv = d["iv"]
                self.imp = d["imp"]
                self.exp = d["exp"]
                self.t_ms = d["t"]
                self.cp = d.get("cp")  # absent in a state file from before the witness
            except Exception:  # noqa: BLE001 - unreadable state: start over, boot counter too
                self.board.log("state: unreadable, starting fresh")
        return self

    def recover(self, last):
        """``last``: the newest queued record (dict) or None. If it is newer than the saved
        state (crash between queue write and state write), it is the baseline."""
        if last is not None and last["seq"] >= self.seq:
            self.seq = last["seq"] + 1
            self.iv = last["iv"]
            self.imp = last["cnt_imp_wh"]
            self.exp = last["cnt_exp_wh"]
            self.t_ms = last["t1"] * 1000

    def save(self):
        d = {"boot": self.boot, "seq": self.seq, "iv": self.iv, "imp": self.imp,
             "exp": self.exp, "t": self.t_ms, "cp": self.cp}
        self.board.write_atomic(_NAME, json.dumps(d).encode())

    def next_boot(self):
        self.boot += 1
        self.save()
        return self.boot
