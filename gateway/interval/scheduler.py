"""The market scheduler: per interval, clear at gate closure, settle after interval end plus
grace, settle late readings as adjustments, checkpoint the ledger at each interval close.

All state is in the database (table ``intervals``: open -> cleared -> settled), and each step is
one transaction, so a restart simply resumes: whatever is due and not done is done next tick,
and a step that is done can never be done again (state guards plus primary keys).
``tick(now)`` runs in the gateway's database thread and returns what to publish.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import time
from collections import Counter
from typing import Any

from gateway.interval import settlement
from gateway.interval.clearing import Bid, ClearFn, Clearing, market_clear, warm_up
from gateway.ingest.codec import Outgoing
from gateway.ingest.store import first_interval
from gateway.config import GatewayConfig
from gateway.ops.influx import Export, enqueue
from gateway.ledger.tlog import Ledger, encode_record
from gateway.registry import Place, Registry
from protocols import messages, topics
from protocols.errors import ProtocolError

log = logging.getLogger("tmeter.gateway.scheduler")


class Scheduler:
    def __init__(self, cfg: GatewayConfig, conn: sqlite3.Connection, ledger: Ledger, clear: ClearFn,
                 counters: Counter[str], export: Export | None = None) -> None:
        self.cfg = cfg
        self.conn = conn
        self.ledger = ledger
        self.clear = clear
        self.counters = counters
        self.export = export
        self.registry = Registry(conn=conn)
        self._last_closed_iv: int | None = None
        self._adjust_seen = 0  # readings.id up to which late readings were looked for
        self._cut: list[tuple[str, int, int]] = []  # (meter, trades left out, trades) of this clearing's messages
        # The daemon's clearing is market_clear timed (gateway/ops/metrics.py TimedClear, whose
        # ``fn`` it is): warm its engine up. A clearing injected by a test needs none.
        if getattr(clear, "fn", clear) is market_clear:
            self._warm_up()

    def _warm_up(self) -> None:
        try:
            warm_up(self.cfg.market)
        except Exception:  # noqa: BLE001 - a slow first clearing is no reason not to start
            log.exception("warming up the %s engine failed", self.cfg.market.mechanism)

    # --- times, in (possibly simulated) unix seconds

    def gate(self, iv: int) -> float:
        return iv * self.cfg.interval_s - self.cfg.gate_closure_s

    def settle_due(self, iv: int) -> float:
        return (iv + 1) * self.cfg.interval_s + self.cfg.settlement.grace_s

    def next_event(self, now: float) -> float:
        """When the next tick has something to do (at the latest: the next gate closure)."""
        iv = messages.interval_index(now, self.cfg.interval_s)
        candidates = [self.gate(iv + 2) if now >= self.gate(iv + 1) else self.gate(iv + 1)]
        row = self.conn.execute("SELECT MIN(iv) FROM intervals WHERE state='cleared'").fetchone()
        if row[0] is not None:
            candidates.append(self.settle_due(row[0]))
        return max(now, min(candidates))

    # --- the tick

    def tick(self, now: float) -> list[Outgoing]:
        try:
            return self._tick(now)
        except BaseException:
            self._adjust_seen = 0  # look at every reading again next time
            raise

    def _tick(self, now: float) -> list[Outgoing]:
        out: list[Outgoing] = []
        current = messages.interval_index(now, self.cfg.interval_s)
        with self.ledger.transaction() as conn:
            # The scheduler is what opens intervals (readings never do, bids only ahead), so no
            # interval is cleared or settled whose bidding never happened; its first run fixes
            # the community's first interval (earlier readings are quarantined, ingest/store.py).
            first_interval(conn, current, now)
            for iv in (current, current + 1):
                conn.execute("INSERT OR IGNORE INTO intervals(iv, state) VALUES (?, 'open')", (iv,))
        for (iv,) in self.conn.execute("SELECT iv FROM intervals WHERE state='open' ORDER BY iv").fetchall():
            if now >= self.gate(iv):
                out.extend(self.clear_interval(iv, now))
        closed = False
        for (iv,) in self.conn.execute("SELECT iv FROM intervals WHERE state='cleared' ORDER BY iv").fetchall():
            if now >= self.settle_due(iv):
                self.settle_interval(iv, now)
                closed = True
        closed |= self.settle_adjustments(now)
        if closed or self._last_closed_iv != current:
            self._last_closed_iv = current
            out.extend(self.checkpoint())
        return out

    def checkpoint(self) -> list[Outgoing]:
        cp, signed = self.ledger.checkpoint()
        msg = messages.checkpoint(cp.origin, cp.size, cp.root_b64, base64.b64encode(signed).decode())
        return [Outgoing(topics.checkpoint_topic(self.cfg.community), messages.encode(msg), qos=1, retain=True)]

    # --- clearing

    def _bids(self, iv: int) -> list[Bid]:
        # The latest bid per meter (highest boot, then highest n) is the one that counts.
        rows = self.conn.execute(
            "SELECT meter, curve FROM bids b WHERE iv=? AND NOT EXISTS (SELECT 1 FROM bids c WHERE"
            " c.meter=b.meter AND c.iv=b.iv AND (c.boot, c.n) > (b.boot, b.n)) ORDER BY meter", (iv,)).fetchall()
        feeders = self._feeders()
        places = self.registry.places(self.cfg.community) if self.cfg.market.mechanism == "p2p" else {}
        return [Bid(m, [(int(q), int(p)) for q, p in json.loads(c)], *_place(places.get(m)))
                for m, c in rows if m not in feeders]

    def clear_interval(self, iv: int, now: float) -> list[Outgoing]:
        bids = self._bids(iv)
        started = time.perf_counter()
        try:
            result = self.clear(iv, bids, self.cfg.market) if bids else Clearing(self.cfg.market.mechanism, 0, {})
        except Exception:  # noqa: BLE001 - a failed clearing leaves everyone on the grid, not the daemon down
            log.exception("clearing interval %d failed; awarding nothing", iv)
            self.counters["clearing_failed"] += 1
            result = Clearing(self.cfg.market.mechanism, 0, {})
        cleared = time.perf_counter()
        if result.unplaced:
            self.counters["p2p_unplaced"] += len(result.unplaced)
            log.warning("interval %d: %d bidders have no provisioned position and trade with the grid only: %s",
                        iv, len(result.unplaced), ", ".join(result.unplaced[:10]))
        out: list[Outgoing] = []
        with self.ledger.transaction() as conn:
            if conn.execute("UPDATE intervals SET state='cleared', mech=?, price=? WHERE iv=? AND state='open'",
                            (result.mech, result.price, iv)).rowcount != 1:
                return []
            public = messages.result(iv, result.mech, result.price, len(bids), max(0, result.traded_wh),
                                     result.grid_import_wh, result.grid_export_wh, result.community_cost,
                                     result.bau_cost)
            body = messages.encode(public)
            leaf = self.ledger.append("result", None, iv, body)  # the public result message is the record
            conn.execute("UPDATE intervals SET result=?, leaf=? WHERE iv=?", (body.decode(), leaf, iv))
            self._cut = []
            for meter, q_wh in sorted(result.awards.items()):
                out.extend(self._award(iv, meter, q_wh, result, now))
            self._log_cut(iv)
            self._export("price", {"iv": iv, "price": result.price, "mech": result.mech,
                                   "ts": iv * self.cfg.interval_s})
        out.append(Outgoing(topics.result_topic(self.cfg.community, iv), body))
        self.counters["cleared"] += 1
        spent = time.perf_counter() - started
        # The gate budget: the awards must be out before their interval opens. Simulated seconds
        # left once they are built (the publishing that follows takes milliseconds).
        spare = iv * self.cfg.interval_s - now - spent * (self.cfg.clock.speed or 1.0)
        log.info("cleared interval %d: %d bids, price %d (%.0f ms: clearing %.0f; %.0f s to spare)", iv, len(bids),
                 result.price, spent * 1000, (cleared - started) * 1000, spare)
        if spare < 0 and bids:
            self.counters["cleared_late"] += 1
            log.warning("interval %d: %d bids cleared %.0f s after it opened (gate closure %d s before it)",
                        iv, len(bids), -spare, self.cfg.gate_closure_s)
        return out

    def _award(self, iv: int, meter: str, q_wh: int, result: Clearing, now: float) -> list[Outgoing]:
        # The ledgered record and the awards row carry every trade: settlement (Award.amount)
        # prices each one, and an auditor sees them all. Only the message to the meter is bounded.
        trades = [list(t) for t in result.trades.get(meter, [])]
        fields: dict[str, Any] = {"iv": iv, "meter": meter, "q_wh": q_wh, "price": result.price, "trades": trades}
        share = result.shares.get(meter)
        if share is not None:
            fields["share_ppm"] = share  # under a sharing rule: the member's share of the grid bill
        leaf = self.ledger.append("award", meter, iv, encode_record("award", fields))
        self.conn.execute("INSERT INTO awards(iv, meter, q_wh, price, trades, share_ppm, leaf) VALUES (?,?,?,?,?,?,?)",
                          (iv, meter, q_wh, result.price, json.dumps(trades), share, leaf))
        self._export("award", {"iv": iv, "meter": meter, "q_wh": q_wh, "ts": iv * self.cfg.interval_s})
        key = self.registry.held_key(meter)  # during a rotation the meter's old key: it has no other
        if key is None:
            return []
        body = award_message(meter, key, iv, int(now), result.mech, q_wh, result.price, trades)
        cut = len(trades) - body[1]
        if cut:
            self.counters["award_trades_cut"] += cut
            self._cut.append((meter, cut, len(trades)))
        return [Outgoing(topics.meter_topic(self.cfg.community, meter, "award"), body[0])]

    def _log_cut(self, iv: int) -> None:
        if not self._cut:
            return
        cut = sum(c for _, c, _ in self._cut)
        worst = max(self._cut, key=lambda x: (x[1], x[0]))
        log.warning("interval %d: %d award messages carry only their largest trades (%d trades left out, at most"
                    " %d per message; e.g. %s: %d of %d); every trade is in the ledgered awards",
                    iv, len(self._cut), cut, messages.MAX_TRADES, worst[0], worst[2] - worst[1], worst[2])

    # --- settlement

    def _feeders(self) -> set[str]:
        feeders = self.registry.feeders()
        if self.cfg.settlement.feeder_meter:
            feeders.add(self.cfg.settlement.feeder_meter)
        return feeders

    def _metered(self, iv: int) -> dict[str, tuple[int, int, bool]]:
        """meter -> (import Wh, export Wh, exact): exact unless a record of the interval says
        it does not describe exactly this interval (partial, offline, reset, overflow, time)."""
        rows = self.conn.execute(
            "SELECT meter, SUM(imp_wh), SUM(exp_wh), MAX((flags & ?) != 0) FROM readings WHERE iv=? GROUP BY meter",
            (settlement.INEXACT_FLAGS, iv)).fetchall()
        return {m: (imp, exp, not inexact) for m, imp, exp, inexact in rows}

    def _awards(self, iv: int) -> dict[str, settlement.Award]:
        rows = self.conn.execute("SELECT meter, q_wh, price, trades, share_ppm FROM awards WHERE iv=?",
                                 (iv,)).fetchall()
        return {m: settlement.Award(q, p, tuple(tuple(t) for t in json.loads(tr)), share)
                for m, q, p, tr, share in rows}

    def _targets(self, iv: int) -> tuple[list[settlement.Line], settlement.Balance]:
        metered, awards, feeders = self._metered(iv), self._awards(iv), self._feeders()
        members = sorted((set(metered) | set(awards)) - feeders)
        lines = []
        for m in members:
            net_export = metered[m][1] - metered[m][0] if m in metered else None
            lines.append(settlement.settle_member(m, awards.get(m), net_export, self.cfg.market))
        fed = [metered[f] for f in feeders if f in metered]
        members_import = sum(metered[m][0] - metered[m][1] for m in members if m in metered)
        # Energy in equals energy out can only be judged when every meter of the community
        # (feeders too) has an exact record of this interval.
        expected = set(self.registry.meters(self.cfg.community)) | feeders
        complete = all(m in metered and metered[m][2] for m in expected)
        grid = self._grid_energy(metered, expected - feeders, feeders)
        if grid is not None:
            lines = settlement.share_grid_bill(lines, *grid, self.cfg.market, awards)
        members_gross = sum(metered[m][0] + metered[m][1] for m in members if m in metered)
        bal = settlement.balance(sum(f[0] - f[1] for f in fed) if fed else None, sum(f[0] + f[1] for f in fed),
                                 members_import, self.cfg.settlement, complete, members_gross,
                                 records=len(fed) + sum(1 for m in members if m in metered))
        return lines, bal

    @staticmethod
    def _grid_energy(metered: dict[str, tuple[int, int, bool]], members: set[str],
                     feeders: set[str]) -> tuple[int, int] | None:
        """(import, export) Wh at the connection point, once every member's reading is in (the
        grid bill covers them all): the feeder meters' where there are any, else the members'
        summed net position. None while some member's (or every feeder's) reading is missing."""
        if not members <= metered.keys() or (feeders and not feeders & metered.keys()):
            return None
        if feeders:
            return (sum(metered[f][0] for f in feeders if f in metered),
                    sum(metered[f][1] for f in feeders if f in metered))
        net_import = sum(metered[m][0] - metered[m][1] for m in members)
        return max(net_import, 0), max(-net_import, 0)

    def _write_line(self, iv: int, rev: int, line: settlement.Line) -> None:
        fields = {"iv": iv, "meter": line.meter, "rev": rev, "award_wh": line.award_wh,
                  "metered_wh": line.metered_wh, "award_amount": line.award_amount,
                  "deviation_amount": line.deviation_amount, "share_amount": line.share_amount,
                  "amount": line.amount}
        if line.metered_wh is None:
            fields.pop("metered_wh")  # canonical JSON has no null; absent means "no reading yet"
        leaf = self.ledger.append("settlement", line.meter, iv, encode_record("settlement", fields))
        self.conn.execute(
            "INSERT INTO settlements(iv, meter, rev, award_wh, metered_wh, award_amount, deviation_amount,"
            " share_amount, amount, leaf) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (iv, line.meter, rev, line.award_wh, line.metered_wh, line.award_amount, line.deviation_amount,
             line.share_amount, line.amount, leaf))
        self._export("settlement", dict(fields, ts=iv * self.cfg.interval_s))

    def _record_balance(self, iv: int, bal: settlement.Balance, mark: int) -> None:
        self.conn.execute("UPDATE intervals SET balanced=?, feeder_diff_wh=?, reading_mark=? WHERE iv=?",
                          (None if bal.balanced is None else int(bal.balanced), bal.diff_wh, mark, iv))
        if bal.balanced is False:
            self.counters["unbalanced_interval"] += 1
            log.warning("interval %d does not balance: feeder minus members %d Wh", iv, bal.diff_wh)

    def _mark(self) -> int:
        return self.conn.execute("SELECT COALESCE(MAX(id), 0) FROM readings").fetchone()[0]

    def settle_interval(self, iv: int, now: float) -> None:
        with self.ledger.transaction() as conn:
            if conn.execute("UPDATE intervals SET state='settled', settled_at=? WHERE iv=? AND state='cleared'",
                            (now, iv)).rowcount != 1:
                return
            lines, bal = self._targets(iv)
            for line in lines:
                self._write_line(iv, 0, line)
            self._record_balance(iv, bal, self._mark())
            self._summary(iv, 0, lines, bal)
        self.counters["settled"] += 1
        log.info("settled interval %d: %d members, balanced=%s", iv, len(lines), bal.balanced)

    def _summary(self, iv: int, rev: int, lines: list[settlement.Line], bal: settlement.Balance) -> None:
        fields: dict[str, Any] = {"iv": iv, "rev": rev, "members": len(lines), "amount": sum(x.amount for x in lines)}
        if bal.balanced is not None:
            fields.update(balanced=int(bal.balanced), feeder_diff_wh=bal.diff_wh)
        self.ledger.append("interval", None, iv, encode_record("interval", fields))

    def settle_adjustments(self, now: float) -> bool:
        """Late readings for settled intervals become adjustment revisions."""
        # Only readings stored since the last look can be late ones: a range on the primary key,
        # so a tick stays cheap however long the log grows.
        newest = self._mark()
        rows = self.conn.execute(
            "SELECT DISTINCT r.iv FROM readings r JOIN intervals i ON i.iv = r.iv"
            " WHERE r.id > ? AND i.state='settled' AND r.id > i.reading_mark ORDER BY r.iv",
            (self._adjust_seen,)).fetchall()
        self._adjust_seen = newest
        for (iv,) in rows:
            with self.ledger.transaction():
                mark = self._mark()
                lines, bal = self._targets(iv)
                changed = []
                for target in lines:
                    prev = self._lines(iv, target.meter)
                    adj = settlement.adjustment(prev, target)
                    if adj is not None:
                        self._write_line(iv, len(prev), adj)
                        changed.append(adj)
                self._record_balance(iv, bal, mark)
                if changed:
                    self._summary(iv, self._revisions(iv), changed, bal)
            self.counters["adjusted"] += 1
            log.info("interval %d: late readings settled as %d adjustments", iv, len(changed))
        return bool(rows)

    def _lines(self, iv: int, meter: str) -> list[settlement.Line]:
        rows = self.conn.execute(
            "SELECT award_wh, metered_wh, award_amount, deviation_amount, share_amount FROM settlements"
            " WHERE iv=? AND meter=? ORDER BY rev", (iv, meter)).fetchall()
        return [settlement.Line(meter, *row) for row in rows]

    def _revisions(self, iv: int) -> int:
        # leaves_iv (iv, meter): one interval's few leaves, instead of a scan of every leaf of the
        # log once per interval ("meter IS NULL": interval leaves carry no meter).
        return self.conn.execute("SELECT COUNT(*) FROM leaves WHERE meter IS NULL AND kind='interval' AND iv=?",
                                 (iv,)).fetchone()[0]

    def _export(self, kind: str, fields: dict[str, Any]) -> None:
        enqueue(self.conn, self.export, kind, fields)


def award_message(meter: str, key: tuple[int, bytes], iv: int, ts: int, mech: str, q_wh: int, price: int,
                  trades: list[list[Any]]) -> tuple[bytes, int]:
    """The signed award for the meter and how many trades it carries: the net q_wh and price
    always (what the firmware acts on), and as many of the largest trades as the meter link
    allows (protocols.meterlink: MAX_TRADES, the firmware's heap, and MAX_PAYLOAD)."""
    ranked = sorted(trades, key=lambda t: (-abs(t[1]), t[0]))
    n = min(len(ranked), messages.MAX_TRADES)
    while True:
        try:
            return messages.encode(messages.award(meter, key[0], iv, ts, mech, q_wh, price, ranked[:n]), key[1]), n
        except ProtocolError as exc:
            if exc.code != "too_large" or n == 0:
                raise
            n -= 1


def _place(place: Place | None) -> tuple[tuple[float, float] | None, int]:
    return (None, 0) if place is None else (place.position, place.preference)
