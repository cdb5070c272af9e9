"""Verified ingest: decode (tag first), de-duplicate, check, store with its ledger leaf, ack.

Decoding and tagging the acks are the stateless first and last stages (gateway/ingest/codec.py); the
daemon runs them in its uplink and downlink pumps. ``Ingest.store(verified)`` runs in the
gateway's single database thread: a batch is one SQLite transaction (group commit), redone
message by message in savepoints should anything go wrong, so a message that fails for any
reason leaves nothing behind. The acks it orders are published only after the commit, so every
"stored" ack the meter sees is for a record on disk. ``Ingest.process(raw)`` does all three.

Reasons are counted under stable codes: the protocol's ``ProtocolError.code`` values plus
``duplicate``, ``conflict``, ``counter_decrease``, ``energy_out_of_range``,
``time_out_of_range``, ``future_interval``, ``wrong_community``, ``gate_closed``,
``duplicate_bid``, ``unknown_meter``, ``queue_full`` and ``internal_error``.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections import Counter
from typing import Any

from gateway.clock import Clock
from gateway.ingest.codec import AckOrder, AckTagger, KeyCache, MeterDecoder, Outgoing, Verified
from gateway.config import GatewayConfig
from gateway.ops.influx import Export, enqueue
from gateway.ledger.tlog import Ledger
from gateway.registry import Registry
from protocols import messages

log = logging.getLogger("tmeter.gateway.ingest")

BID_HORIZON = 96  # bids may come this many intervals ahead (a day of 15-minute intervals)


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
        # Intervals known to have a row, so most readings skip that insert; grown only after a
        # commit, so a rolled-back batch cannot leave an interval believed present but missing.
        self._known_ivs: set[int] = set()
        self._new_ivs: set[int] = set()
        # Each meter's newest stored record as (boot, seq, cnt_imp_wh, cnt_exp_wh), this batch's
        # uncommitted ones included: records mostly arrive in order, and then this is all the
        # store needs to know to take the next one.
        self._latest: dict[str, tuple[int, int, int, int]] = {}

    def process(self, batch: list[tuple[str, bytes]]) -> list[Outgoing]:
        """Decode and store raw (topic, payload) messages; returns the acks to publish."""
        return self.tag_acks(self.store(self.decoder.decode_all(batch)))

    def store(self, batch: list[Verified]) -> list[AckOrder]:
        """Store a batch in one transaction; returns the acks to send once it committed."""
        self.keys.retire_superseded(batch, self.counters)  # a rotated meter seen with its new key
        outgoing: list[AckOrder] = []
        counts: Counter[str] = Counter()
        self._new_ivs = set()
        try:
            self._batch(batch, outgoing, counts)
        except BaseException:
            self._latest.clear()  # the batch rolled back: forget its records, reload on demand
            raise
        self._known_ivs |= self._new_ivs
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
        self._latest.clear()
        self._new_ivs = set()
        with self.ledger.transaction() as conn:
            for verified in batch:
                conn.execute("SAVEPOINT msg")
                mark = self.ledger.mark()
                try:
                    self._one(verified, outgoing, counts)
                except Exception:  # noqa: BLE001 - the daemon never stops on input
                    conn.execute("ROLLBACK TO msg")
                    self.ledger.rollback_to(mark)
                    self._forget_rolled_back(conn)
                    counts["internal_error"] += 1
                    log.exception("internal error on %s", verified[0][:128])
                conn.execute("RELEASE msg")

    def _forget_rolled_back(self, conn: sqlite3.Connection) -> None:
        # Caches must not keep what the rolled-back message added (rare path: re-read them).
        self._latest.clear()
        self._new_ivs = {iv for iv in self._new_ivs
                         if conn.execute("SELECT 1 FROM intervals WHERE iv=?", (iv,)).fetchone()}

    def _one(self, verified: Verified, out: list[AckOrder], counts: Counter[str]) -> None:
        _, community, meter, msg, body = verified
        kind = msg["type"]
        try:
            if community != self.cfg.community:
                raise Rejected("wrong_community", ack=False)
            if kind == "reading":
                self._ack(out, msg, self._reading(meter, msg, body, counts))
            elif kind == "bid":
                self._bid(meter, msg, body, counts)
            elif kind == "status":
                self._status(meter, body)
                counts["status"] += 1
            else:  # gateway-to-meter kinds are never subscribed to; someone published one at us
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

    def _reading(self, meter: str, msg: dict[str, Any], body: bytes, counts: Counter[str]) -> str:
        """Stores the reading unless it is a repeat; returns the ack's result."""
        pos = (msg["boot"], msg["seq"])
        newest = self._newest(meter)
        if pos > newest[:2]:  # in order: newer than anything stored, so neither duplicate nor gap-filler
            before: tuple[int, ...] | None = newest if newest[0] >= 0 else None
        else:  # the stored record at this (boot, seq) if any, else the one just before it
            before = self.conn.execute(
                "SELECT boot, seq, cnt_imp_wh, cnt_exp_wh, leaf FROM readings WHERE meter=? AND (boot, seq) <= (?, ?)"
                " ORDER BY boot DESC, seq DESC LIMIT 1", (meter, *pos)).fetchone()
            if before is not None and (before[0], before[1]) == pos:
                return self._repeat(msg, body, before[4], counts)
        self._check_reading(meter, msg, before)
        leaf = self.ledger.append("reading", meter, msg["iv"], body)
        self.conn.execute(
            "INSERT INTO readings(meter, boot, seq, iv, imp_wh, exp_wh, cnt_imp_wh, cnt_exp_wh, flags, leaf, received)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (meter, msg["boot"], msg["seq"], msg["iv"], msg["imp_wh"], msg["exp_wh"], msg["cnt_imp_wh"],
             msg["cnt_exp_wh"], msg["flags"], leaf, self.clock.now()))
        if msg["iv"] not in self._known_ivs:
            self.conn.execute("INSERT OR IGNORE INTO intervals(iv, state) VALUES (?, 'open')", (msg["iv"],))
            self._new_ivs.add(msg["iv"])
        self._export("reading", msg)
        if pos > newest[:2]:
            self._latest[meter] = (*pos, msg["cnt_imp_wh"], msg["cnt_exp_wh"])
        counts["stored"] += 1
        return messages.ACK_STORED

    def _repeat(self, msg: dict[str, Any], body: bytes, leaf: int, counts: Counter[str]) -> str:
        stored = self.conn.execute("SELECT record FROM openings WHERE idx=?", (leaf,)).fetchone()
        if stored is not None and bytes(stored[0]) != body:
            raise Rejected("conflict", ack=True)  # same (boot, seq), other content: a device bug
        counts["duplicate"] += 1  # replays included: acked again, stored once
        return messages.ACK_DUPLICATE

    def _newest(self, meter: str) -> tuple[int, int, int, int]:
        """The meter's highest stored (boot, seq) and its counters, cached (it only grows)."""
        if meter not in self._latest:
            row = self.conn.execute("SELECT boot, seq, cnt_imp_wh, cnt_exp_wh FROM readings WHERE meter=?"
                                    " ORDER BY boot DESC, seq DESC LIMIT 1", (meter,)).fetchone()
            self._latest[meter] = tuple(row) if row else (-1, -1, 0, 0)
        return self._latest[meter]

    def _check_reading(self, meter: str, msg: dict[str, Any], before: tuple[int, ...] | None) -> None:
        iv, interval = msg["iv"], self.cfg.interval_s
        if iv > messages.interval_index(self.clock.now(), interval) + self.cfg.ingest.future_intervals:
            raise Rejected("future_interval", ack=False)  # maybe our clock is behind: let it retry
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
        if not inside and not msg["flags"] & messages.FLAG_TIME_UNSYNCED:
            raise Rejected("time_out_of_range", ack=True)
        self._check_monotonic(meter, msg, before)

    def _check_monotonic(self, meter: str, msg: dict[str, Any], before: tuple[int, ...] | None) -> None:
        """Counters never decrease from one record to the next in (boot, seq) order, unless the
        later record carries the counter-reset flag. Records may arrive out of order (store and
        forward), so the new one is checked against both neighbours."""
        reset = msg["flags"] & messages.FLAG_COUNTER_RESET
        if before and not reset and (msg["cnt_imp_wh"] < before[2] or msg["cnt_exp_wh"] < before[3]):
            raise Rejected("counter_decrease", ack=True)
        if (msg["boot"], msg["seq"]) > self._newest(meter)[:2]:
            return  # nothing stored after it: the common, in-order case needs no second query
        after = self.conn.execute(
            "SELECT cnt_imp_wh, cnt_exp_wh, flags FROM readings WHERE meter=? AND (boot, seq) > (?, ?)"
            " ORDER BY boot, seq LIMIT 1", (meter, msg["boot"], msg["seq"])).fetchone()
        if after and not after[2] & messages.FLAG_COUNTER_RESET and (
                after[0] < msg["cnt_imp_wh"] or after[1] < msg["cnt_exp_wh"]):
            raise Rejected("counter_decrease", ack=True)

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

    def _status(self, meter: str, body: bytes) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meter_status(meter, body, received) VALUES (?,?,?)",
                          (meter, body.decode(), self.clock.now()))

    def _export(self, kind: str, fields: dict[str, Any]) -> None:
        enqueue(self.conn, self.export, kind, fields)

