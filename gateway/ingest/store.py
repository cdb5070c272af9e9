"""Verified ingest: decode (tag first), de-duplicate, check, store with its ledger leaf, ack.

Decoding and tagging the acks are the stateless first and last stages (gateway/ingest/codec.py); the
daemon runs them in its uplink and downlink pumps. ``Ingest.store(verified)`` runs in the
gateway's single database thread: a batch is one SQLite transaction (group commit), redone
message by message in savepoints should anything go wrong, so a message that fails for any
reason leaves nothing behind. The acks it orders are published only after the commit, so every
"stored" ack the meter sees is for a record on disk. ``Ingest.process(raw)`` does all three.

Reasons are counted under stable codes: the protocol's ``ProtocolError.code`` values plus
``duplicate``, ``conflict``, ``counter_decrease``, ``counter_mismatch``, ``energy_out_of_range``,
``span_out_of_range``, ``time_out_of_range``, ``future_interval``, ``quarantined``,
``wrong_community``, ``gate_closed``, ``duplicate_bid``, ``unknown_meter``, ``queue_full`` and
``internal_error``.

Plausibility (docs/architecture.md section 8): a gap record's span is bounded by what the
gateway knows (the meter's previous record, its provisioning, ``ingest.max_outage_s``); the
counters must agree with the energy against the previous stored record; records of intervals
before the meter's provisioning, before the community's first interval or older than
``ingest.settlement_window_s`` are quarantined (kept aside, ledgered, acked, never settled). A
reading never creates an interval: only the scheduler and bids do.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import Counter
from dataclasses import dataclass
from typing import Any

from gateway.clock import Clock
from gateway.ingest.codec import AckOrder, AckTagger, KeyCache, MeterDecoder, Outgoing, Signature, Verified
from gateway.config import GatewayConfig
from gateway.ops.influx import Export, enqueue
from gateway.ledger import records
from gateway.ledger.tlog import Ledger, encode_record, signature_line
from gateway.registry import Registry
from protocols import canonical, messages

log = logging.getLogger("tmeter.gateway.ingest")

BID_HORIZON = 96  # bids may come this many intervals ahead (a day of 15-minute intervals)
_PREV_COLUMNS = "boot, seq, cnt_imp_wh, cnt_exp_wh, flags, leaf"


@dataclass(frozen=True)
class Prev:
    """What the checks need of a stored reading: its place, counters, flags and end (t1)."""

    pos: tuple[int, int]
    cnt_imp: int
    cnt_exp: int
    flags: int
    t1: int | None  # None once the member's records were erased


def first_interval(conn: sqlite3.Connection, current: int, now: float) -> int:
    """The community's first interval: recorded by the first caller (the scheduler's first
    tick, or a reading before it) as the interval current then, or an earlier one already bid
    on (a database from before the table existed); never changed afterwards."""
    row = conn.execute("SELECT first_iv FROM community_start").fetchone()
    if row is not None:  # the scheduler asks at every tick: the bids are scanned only once
        return int(row[0])
    conn.execute("INSERT INTO community_start(one, first_iv, at)"
                 " VALUES (1, MIN(?, COALESCE((SELECT MIN(iv) FROM bids), ?)), ?)", (current, current, now))
    return int(conn.execute("SELECT first_iv FROM community_start").fetchone()[0])


class Rejected(Exception):
    """An authentic message we will not store; ``ack`` says whether the meter is told so."""

    def __init__(self, code: str, ack: bool) -> None:
        super().__init__(code)
        self.code = code
        self.ack = ack


class Ingest:
    def __init__(self, cfg: GatewayConfig, conn: sqlite3.Connection, ledger: Ledger, clock: Clock,
                 counters: Counter[str], export: Export | None = None) -> None:
        self.cfg = cfg
        self.conn = conn
        self.ledger = ledger
        self.clock = clock
        self.counters = counters
        self.export = export  # (measurement kind, fields) -> line protocol, or None
        self.keys = KeyCache(Registry(conn=conn))
        self.decoder = MeterDecoder(self.keys, counters)
        self.tag_acks = AckTagger(self.keys, cfg.community, cfg.ingest.ack_qos)
        # Each meter's newest stored record (this batch's uncommitted ones included): records
        # mostly arrive in order, and then this is all the store needs to know to take the next one.
        self._latest: dict[str, Prev | None] = {}
        self._provisioned: dict[str, float] = {}  # meter -> provisioning time on our clock
        self._first_iv: int | None = None

    def process(self, batch: list[tuple[str, bytes]]) -> list[Outgoing]:
        """Decode and store raw (topic, payload) messages; returns the acks to publish."""
        return self.tag_acks(self.store(self.decoder.decode_all(batch)))

    def store(self, batch: list[Verified]) -> list[AckOrder]:
        """Store a batch in one transaction; returns the acks to send once it committed."""
        self.keys.retire_superseded(batch, self.counters)  # a rotated meter seen with its new key
        outgoing: list[AckOrder] = []
        counts: Counter[str] = Counter()
        try:
            self._batch(batch, outgoing, counts)
        except BaseException:
            self._forget()  # the batch rolled back: forget its records, reload on demand
            raise
        self.counters.update(counts)
        return outgoing

    def _batch(self, batch: list[Verified], outgoing: list[AckOrder], counts: Counter[str]) -> None:
        """Fast path: the whole batch in one transaction. Should any message fail unexpectedly,
        the batch is rolled back and redone message by message, each in a savepoint, so the
        failing one leaves nothing behind and the others are stored."""
        first = len(outgoing)
        try:
            with self.ledger.transaction():
                for verified in batch:
                    self._one(verified, outgoing, counts)
            return
        except Exception:  # noqa: BLE001 - redone carefully below
            log.warning("a batch of %d failed; redoing it message by message", len(batch))
        del outgoing[first:]
        counts.clear()
        self._forget()
        with self.ledger.transaction() as conn:
            for verified in batch:
                conn.execute("SAVEPOINT msg")
                mark = self.ledger.mark()
                try:
                    self._one(verified, outgoing, counts)
                except Exception:  # noqa: BLE001 - the daemon never stops on input
                    conn.execute("ROLLBACK TO msg")
                    self.ledger.rollback_to(mark)
                    self._forget()
                    counts["internal_error"] += 1
                    log.exception("internal error on %s", verified[0][:128])
                conn.execute("RELEASE msg")

    def _forget(self) -> None:
        # Caches must not keep what rolled back (rare path: re-read them).
        self._latest.clear()
        self._first_iv = None

    def _one(self, verified: Verified, out: list[AckOrder], counts: Counter[str]) -> None:
        _, community, meter, msg, body, sig = verified
        kind = msg["type"]
        try:
            if community != self.cfg.community:
                raise Rejected("wrong_community", ack=False)
            if kind == "reading":
                self._ack(out, msg, self._reading(meter, msg, body, sig, counts))
            elif kind == "bid":
                self._bid(meter, msg, body, counts)
            elif kind == "status":
                self._status(meter, msg, body)
                counts["status"] += 1
            else:  # MeterDecoder passes only meter uplink kinds; anything else is a caller's bug
                raise Rejected("topic_mismatch", ack=False)
        except Rejected as rej:
            counts[rej.code] += 1
            log.warning("rejected %s from %s: %s", kind, meter, rej.code)
            if rej.ack and kind == "reading":
                self._ack(out, msg, rej.code)

    # --- readings

    @staticmethod
    def _ack(out: list[AckOrder], msg: dict[str, Any], res: str) -> None:
        out.append((msg["meter"], msg["kid"], msg["boot"], msg["seq"], res))

    def _reading(self, meter: str, msg: dict[str, Any], body: bytes, sig: Signature | None,
                 counts: Counter[str]) -> str:
        """Stores (or quarantines) the reading unless it is a repeat; returns the ack's result.
        The meter's signature, if it signed, is kept with the opening (the commitment is the
        body's alone, so a repeat signed again is the same record)."""
        pos = (msg["boot"], msg["seq"])
        newest = self._newest(meter)
        in_order = newest is None or pos > newest.pos
        before = newest
        if not in_order:  # the stored record at this (boot, seq) if any, else the one just before it
            row = self.conn.execute(
                f"SELECT {_PREV_COLUMNS} FROM readings WHERE meter=? AND (boot, seq) <= (?, ?)"
                " ORDER BY boot DESC, seq DESC LIMIT 1", (meter, *pos)).fetchone()
            if row is not None and (row[0], row[1]) == pos:
                return self._repeat(body, row[5], counts, nested=False)
            before = self._prev(row)
        if msg["iv"] > messages.interval_index(self.clock.now(), self.cfg.interval_s) + self.cfg.ingest.future_intervals:
            raise Rejected("future_interval", ack=False)  # maybe our clock is behind: let it retry
        reason = self._quarantine_reason(meter, msg)
        if reason is not None or not in_order:
            kept = self.conn.execute("SELECT leaf FROM quarantine WHERE meter=? AND boot=? AND seq=?",
                                     (meter, *pos)).fetchone()
            if kept is not None:
                return self._repeat(body, kept[0], counts, nested=True)
        if reason is not None:
            return self._quarantine(meter, msg, reason, counts)
        self._check_reading(meter, msg, before, in_order)
        leaf = self.ledger.append("reading", meter, msg["iv"], body, None if sig is None else signature_line(*sig))
        self.conn.execute(
            "INSERT INTO readings(meter, boot, seq, iv, imp_wh, exp_wh, cnt_imp_wh, cnt_exp_wh, flags, leaf, received)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (meter, msg["boot"], msg["seq"], msg["iv"], msg["imp_wh"], msg["exp_wh"], msg["cnt_imp_wh"],
             msg["cnt_exp_wh"], msg["flags"], leaf, self.clock.now()))
        # No intervals row: only the scheduler (and bids ahead) open intervals, so a reading can
        # never make the market clear or settle an interval whose bidding never happened.
        self._export("reading", msg)
        if in_order:
            self._latest[meter] = Prev(pos, msg["cnt_imp_wh"], msg["cnt_exp_wh"], msg["flags"], msg["t1"])
        counts["stored"] += 1
        return messages.ACK_STORED

    def _repeat(self, body: bytes, leaf: int, counts: Counter[str], nested: bool) -> str:
        stored = self.conn.execute("SELECT record FROM openings WHERE idx=?", (leaf,)).fetchone()
        if stored is not None:
            record = records.unpack(bytes(stored[0]))
            if nested:  # a quarantined leaf wraps the meter's message
                record = canonical.encode(canonical.parse(record)["record"])
            if record != body:
                raise Rejected("conflict", ack=True)  # same (boot, seq), other content: a device bug
        counts["duplicate"] += 1  # replays included: acked again, stored once
        return messages.ACK_DUPLICATE

    # --- quarantine

    def _quarantine_reason(self, meter: str, msg: dict[str, Any]) -> str | None:
        """Why a record cannot be settled as a normal one, judged by the interval it names
        (FLAG_TIME_UNSYNCED changes none of this: a clock that is wrong is no excuse)."""
        interval = self.cfg.interval_s
        end = (msg["iv"] + 1) * interval
        if end < self._provisioned_at(meter) - self.cfg.ingest.time_slack_s:
            return "before_provisioning"
        if msg["iv"] < self._first_interval():
            return "before_first_interval"
        if end < self.clock.now() - self.cfg.ingest.settlement_window_s:
            return "too_old"
        return None

    def _quarantine(self, meter: str, msg: dict[str, Any], reason: str, counts: Counter[str]) -> str:
        """Kept aside, on disk and in the ledger (the meter's own message inside a gateway record
        naming the reason), so the ack "stored" is true; never part of a settlement."""
        record = encode_record("quarantined", {"meter": meter, "iv": msg["iv"], "reason": reason, "record": msg})
        leaf = self.ledger.append("quarantined", meter, msg["iv"], record)
        self.conn.execute(
            "INSERT INTO quarantine(meter, boot, seq, iv, t0, t1, imp_wh, exp_wh, flags, reason, leaf, received)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (meter, msg["boot"], msg["seq"], msg["iv"], msg["t0"], msg["t1"], msg["imp_wh"], msg["exp_wh"],
             msg["flags"], reason, leaf, self.clock.now()))
        counts["quarantined"] += 1
        log.warning("quarantined reading %s/%d/%d for interval %d: %s", meter, msg["boot"], msg["seq"], msg["iv"],
                    reason)
        return messages.ACK_STORED

    def _provisioned_at(self, meter: str) -> float:
        """The meter's provisioning (meters.created, wall seconds) on the gateway's clock."""
        if meter not in self._provisioned:
            row = self.conn.execute("SELECT created FROM meters WHERE meter=?", (meter,)).fetchone()
            self._provisioned[meter] = float(self.clock.at_wall(row[0])) if row else float("-inf")
        return self._provisioned[meter]

    def _first_interval(self) -> int:
        if self._first_iv is None:
            now = self.clock.now()
            self._first_iv = first_interval(self.conn, messages.interval_index(now, self.cfg.interval_s), now)
        return self._first_iv

    # --- the checks

    def _newest(self, meter: str) -> Prev | None:
        """The meter's highest stored (boot, seq), cached (it only grows)."""
        if meter not in self._latest:
            self._latest[meter] = self._prev(self.conn.execute(
                f"SELECT {_PREV_COLUMNS} FROM readings WHERE meter=? ORDER BY boot DESC, seq DESC LIMIT 1",
                (meter,)).fetchone())
        return self._latest[meter]

    def _prev(self, row: tuple[Any, ...] | None) -> Prev | None:
        if row is None:
            return None
        fields = self._opened(row[5])
        return Prev((row[0], row[1]), row[2], row[3], row[4], fields["t1"] if fields else None)

    def _opened(self, leaf: int) -> dict[str, Any] | None:
        """A stored reading's own message (t0, t1 are kept only there); None once erased."""
        rec = self.conn.execute("SELECT record FROM openings WHERE idx=?", (leaf,)).fetchone()
        return canonical.parse(records.unpack(bytes(rec[0]))) if rec else None

    def _check_reading(self, meter: str, msg: dict[str, Any], before: Prev | None, in_order: bool) -> None:
        iv, interval = msg["iv"], self.cfg.interval_s
        # A gap record (the meter or its board was down, or read late, at a boundary) runs
        # from where the previous record ended to a real read, so it may span more than its
        # interval; it says so with its flags, must still overlap its interval, and its
        # energy may be that of its whole span. Refusing it would lose authentic energy.
        gap = msg["flags"] & (messages.FLAG_PARTIAL | messages.FLAG_METER_OFFLINE)
        span_s = max(interval, msg["t1"] - msg["t0"]) if gap else interval
        max_wh = self.cfg.ingest.max_power_w * span_s // 3600
        if msg["imp_wh"] > max_wh or msg["exp_wh"] > max_wh:
            raise Rejected("energy_out_of_range", ack=True)
        slack = self.cfg.ingest.time_slack_s
        lo, hi = iv * interval - slack, (iv + 1) * interval + slack
        inside = (msg["t0"] <= hi and msg["t1"] >= lo) if gap else (msg["t0"] >= lo and msg["t1"] <= hi)
        # An unsynchronised clock may put t0/t1 beside the interval its own clock chose; that is
        # all the flag excuses (the span, age and provisioning checks still apply).
        if not inside and not msg["flags"] & messages.FLAG_TIME_UNSYNCED:
            raise Rejected("time_out_of_range", ack=True)
        if gap:
            self._check_span(meter, msg, before)
        self._check_counters(meter, msg, before, in_order)

    def _check_span(self, meter: str, msg: dict[str, Any], before: Prev | None) -> None:
        """A gap record's span starts no earlier than the gateway can know energy flowed: the
        meter's previous record's end and its provisioning (each within the time slack), and is
        at most ``ingest.max_outage_s`` long. (A meter claiming t0 = 0 claims 56 years of energy.)"""
        lo = self._provisioned_at(meter)
        if before is not None and before.t1 is not None:
            lo = max(lo, before.t1)
        if msg["t0"] < lo - self.cfg.ingest.time_slack_s or msg["t1"] - msg["t0"] > self.cfg.ingest.max_outage_s:
            raise Rejected("span_out_of_range", ack=True)

    def _check_counters(self, meter: str, msg: dict[str, Any], before: Prev | None, in_order: bool) -> None:
        """The record must fit between its stored neighbours in (boot, seq) order. Records may
        arrive out of order (store and forward), so a late one is checked against both."""
        self._chain(before, msg)
        if in_order:
            return  # nothing stored after it: the common case needs no second query
        row = self.conn.execute("SELECT leaf FROM readings WHERE meter=? AND (boot, seq) > (?, ?)"
                                " ORDER BY boot, seq LIMIT 1", (meter, msg["boot"], msg["seq"])).fetchone()
        after = self._opened(row[0]) if row else None
        if after is not None:
            self._chain(Prev((msg["boot"], msg["seq"]), msg["cnt_imp_wh"], msg["cnt_exp_wh"], msg["flags"],
                             msg["t1"]), after)

    def _chain(self, prev: Prev | None, nxt: dict[str, Any]) -> None:
        """The firmware's records chain (firmware/accounting.py): each starts from the counters
        the previous one ended with, in integer Wh, so for the next record in sequence
        imp_wh == cnt_imp_wh - previous cnt_imp_wh exactly (and for export). Across a sequence gap
        (records dropped from a full queue, or refused here) or an offline meter (energy it did
        not see), the counters rose by at least the record's energy and at most what
        ``max_power_w`` allows in the time between the two records' ends. A reset-flagged record
        is a new baseline. Refused records are never stored, so they never become the baseline:
        one absurd counter does not poison the readings after it."""
        if prev is None or nxt["flags"] & messages.FLAG_COUNTER_RESET:
            return
        if prev.flags & messages.FLAG_METER_OFFLINE and prev.cnt_imp == prev.cnt_exp == 0:
            return  # a record of a meter never read since boot carries no counters
        d_imp, d_exp = nxt["cnt_imp_wh"] - prev.cnt_imp, nxt["cnt_exp_wh"] - prev.cnt_exp
        if d_imp < 0 or d_exp < 0:
            raise Rejected("counter_decrease", ack=True)
        if nxt["seq"] == prev.pos[1] + 1 and not nxt["flags"] & messages.FLAG_METER_OFFLINE:
            if (d_imp, d_exp) != (nxt["imp_wh"], nxt["exp_wh"]):
                raise Rejected("counter_mismatch", ack=True)
            return
        elapsed = nxt["t1"] - prev.t1 if prev.t1 is not None else self.cfg.ingest.max_outage_s
        limit = self.cfg.ingest.max_power_w * (max(self.cfg.interval_s, elapsed) + self.cfg.ingest.time_slack_s) // 3600
        if nxt["imp_wh"] > d_imp or nxt["exp_wh"] > d_exp or d_imp > limit or d_exp > limit:
            raise Rejected("counter_mismatch", ack=True)

    # --- bids and status

    def _bid(self, meter: str, msg: dict[str, Any], body: bytes, counts: Counter[str]) -> None:
        iv, now = msg["iv"], self.clock.now()
        if iv > messages.interval_index(now, self.cfg.interval_s) + BID_HORIZON:
            raise Rejected("future_interval", ack=False)
        state = self.conn.execute("SELECT state FROM intervals WHERE iv=?", (iv,)).fetchone()
        if now >= iv * self.cfg.interval_s - self.cfg.gate_closure_s or (state and state[0] != "open"):
            raise Rejected("gate_closed", ack=False)
        if self.conn.execute("SELECT 1 FROM bids WHERE meter=? AND iv=? AND boot=? AND n=?",
                             (meter, iv, msg["boot"], msg["n"])).fetchone():
            raise Rejected("duplicate_bid", ack=False)
        leaf = self.ledger.append("bid", meter, iv, body)
        self.conn.execute("INSERT INTO bids(meter, iv, boot, n, curve, leaf) VALUES (?,?,?,?,?,?)",
                          (meter, iv, msg["boot"], msg["n"], json.dumps(msg["curve"]), leaf))
        self.conn.execute("INSERT OR IGNORE INTO intervals(iv, state) VALUES (?, 'open')", (iv,))
        counts["bid"] += 1

    def _status(self, meter: str, msg: dict[str, Any], body: bytes) -> None:
        """Keep each meter's newest status: its ``cp`` is the meter's witness of the ledger
        (gateway/ledger/verify.py). The last will is composed at CONNECT (MQTT 3.1.1 §3.1.2.5), so
        when the broker delivers it (the meter dropped off) its counters and ``cp`` are as old as
        that connection: it must not replace a later status of the same boot, but its "offline"
        is the news (column ``online``: whether the meter is connected now)."""
        row = self.conn.execute("SELECT body FROM meter_status WHERE meter=?", (meter,)).fetchone()
        if row is not None and _older_status(msg, row[0]):
            if msg["online"] == 0:  # still, the will says the meter dropped off: presence follows it
                self.conn.execute("UPDATE meter_status SET online=0 WHERE meter=?", (meter,))
            raise Rejected("status_older", ack=False)
        self.conn.execute("INSERT OR REPLACE INTO meter_status(meter, body, received, online) VALUES (?,?,?,?)",
                          (meter, body.decode(), self.clock.now(), msg["online"]))

    def _export(self, kind: str, fields: dict[str, Any]) -> None:
        enqueue(self.conn, self.export, kind, fields)


def _older_status(msg: dict[str, Any], stored: str) -> bool:
    """Same boot, smaller status number than the stored one (a new boot starts again at 1).
    An unreadable stored status is replaced."""
    try:
        kept = json.loads(stored)
        return bool(msg["boot"] == kept["boot"] and msg["n"] < kept["n"])
    except (ValueError, TypeError, KeyError):
        return False
