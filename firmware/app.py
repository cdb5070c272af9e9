# The meter application: wires the hardware layer, Modbus devices, accounting, the record
# queue, MQTT, bidding and awards into concurrent asyncio tasks.
#
#   meter loop   polls the meter, closes intervals, signs and queues readings, applies awards,
#                prepares bids; it never waits on the network
#   forwarder    sends queued readings (oldest first, a window in flight), re-sends the ones
#                not acknowledged in time; acks remove them from the queue
#   ticker       wakes the forwarder and the status task on time (asyncio.wait_for would
#                allocate a task for every timed wait); NTP sync on boards (until synced,
#                readings carry FLAG_TIME_UNSYNCED)
#   bidder       publishes the prepared bid unless its gate has closed
#   status       retained status with counters and the witnessed checkpoint (and the same as
#                last will, online = 0)
#   mqtt         the client's connect/reconnect loop (and its keepalive)
#   watchdog     feeds the watchdog while the meter loop makes progress
import asyncio

from firmware import bidding, devices, mqtt
from firmware.accounting import Accountant
from firmware.awards import AwardBook
from firmware.modbus_master import Master, ModbusError
from firmware.outbox import Outbox
from firmware.state import State
from firmware.watchdog import LoopWatchdog
from protocols import const, meterlink, topics
from protocols.errors import ProtocolError

# Names longer than ten characters are no interned names on MicroPython (cp_rollback,
# cp_malformed): they cost the device a string each, not a slot in the name pool.
_COUNTERS = const(("records", "acked", "rejected", "q_depth", "q_drop", "q_bad", "bids",
                   "bid_skip", "heap_free", "cp_rollback", "cp_malformed"))
# The firmware version in the status, major * 10000 + minor * 100 + patch.
_VERSION = const(10300)


class App:
    def __init__(self, cfg, board, plans):
        self.cfg = cfg
        self.board = board
        self.meter_id = cfg["meter"]
        self.kid = cfg["kid"]
        self.key = cfg["key_bytes"]
        self.interval_s = cfg["interval_s"]
        self.interval_ms = cfg["interval_s"] * 1000
        self.c = {}
        for k in _COUNTERS:
            self.c[k] = 0
        # In every status: machine.reset_cause() of this boot (boards; 0 elsewhere) and the
        # firmware version, as u32 counters (protocols/meterlink.py), no schema change.
        self.c["rst"] = board.rst
        self.c["fw"] = _VERSION
        p = cfg.get("ota_pointer")
        if p:  # booted by firmware/main.py from an OTA pointer (firmware/ota.py): its state
            self.c["fw"] = p[3] or _VERSION
            self.c["ota_trial_n"] = p[2]
            self.c["ota_refused"] = p[4]
        community = cfg["community"]
        self.t_reading = topics.meter_topic(community, self.meter_id, "reading")
        self.t_bid = topics.meter_topic(community, self.meter_id, "bid")
        self.t_status = topics.meter_topic(community, self.meter_id, "status")
        self.t_ack = topics.meter_topic(community, self.meter_id, "ack")
        self.t_award = topics.meter_topic(community, self.meter_id, "award")
        self.state = State(board)
        self.outbox = Outbox(board, self.kid, self.key, cfg["queue_max"], self.c)
        self.acct = Accountant(self.interval_s)
        mb = cfg["modbus"]
        self.master = Master(board, board.open_link(mb), mb, self.c)
        self.meter = devices.Meter(self.master, mb["meter_unit"], plans[0])
        self.battery = devices.Battery(self.master, mb["battery_unit"], plans[1]) \
            if plans[1] is not None else None
        self.awards = AwardBook(self.meter_id, self.kid, self.key, self.interval_s, self.c)
        self.forecast = bidding.Agent(self.interval_s)  # forecast, value of storage
        self.client = mqtt.Client(board, cfg["mqtt"], "tm-" + self.meter_id, will=self._will,
                                  on_message=self._on_message, on_connect=self._on_connect,
                                  counters=self.c)
        # The third subscription is the ledger's retained checkpoint (_on_message's last case),
        # the fourth the remote configuration's commands (protocols/remote.py).
        self.client.subscriptions = [self.t_ack, self.t_award, topics.checkpoint_topic(community),
                                     "tm/v1/%s/cfg/%s/down" % (community, self.meter_id)]
        if cfg.get("release_key"):  # OTA offers and chunks: the fifth (protocols/ota.py)
            self.client.subscriptions.append("tm/v1/%s/ota/%s/down" % (community, self.meter_id))
        self.client.window = cfg["send_window"]
        self.wdt = LoopWatchdog(board, cfg["wdt_s"] * 1000, self.c)
        self.boot = 0
        self.status_n = 0
        self.bid_n = 0
        self.closed = 0
        self.sent = {}              # seq -> ticks when last sent (not yet acknowledged)
        self.bid = None             # (iv, payload) ready for the bidder
        self.applied_iv = None      # interval whose award is applied to the battery
        self.overflow = False       # a record was dropped; the next one carries the flag
        self.batt_mark = None       # battery energy counters at the last boundary
        self._wake_fwd = asyncio.Event()
        self._wake_bid = asyncio.Event()
        self._wake_status = asyncio.Event()
        self.done = asyncio.Event()

    # -- boot ------------------------------------------------------------------------------
    def restore(self):
        """Load state and queue, reconcile them after a crash, count this boot."""
        self.state.load()
        if self.outbox.load():
            self.overflow = True  # records were dropped: the next one says so
        self.state.recover(self.outbox.newest())
        if self.state.cp is not None:
            # The witness read back from flash goes into every status: checked by the status's
            # own schema, so a damaged one is dropped rather than stop every status.
            try:
                meterlink.validate(meterlink.status(self.meter_id, self.kid, 0, 0, 0, 0, 0, {},
                                                    self.state.cp))
            except ProtocolError:
                self.board.log("state: witnessed checkpoint unreadable, dropped")
                self.state.cp = None
        self.boot = self.state.next_boot()
        if not self.board.time_ok() and self.state.t_ms:
            # A board before NTP: its clock runs on from the last reading's time (hal_esp32
            # resume; firmware/README.md, "Clock").
            self.board.resume(self.state.t_ms)
        now = self.board.now_ms()
        iv = now // self.interval_ms
        if self.state.iv is not None and self.state.iv >= iv:
            iv = self.state.iv + 1  # never a second record for an interval already closed
        self.acct.restore(iv, self.state.imp, self.state.exp, self.state.t_ms, self.state.iv)
        self.board.log("boot %d seq %d queued %d iv %d" % (self.boot, self.state.seq,
                                                            len(self.outbox), iv))

    # -- signing and queueing ----------------------------------------------------------------
    def emit(self, rec):
        """Sign one reading, store it on flash, then advance the persistent state."""
        if self.outbox.make_room():
            self.overflow = True
        flags = rec["flags"]
        if self.overflow:
            flags |= meterlink.FLAG_QUEUE_OVERFLOW
        if not self.board.time_ok():
            flags |= meterlink.FLAG_TIME_UNSYNCED
        seq = self.state.seq
        msg = meterlink.reading(self.meter_id, self.kid, self.boot, seq, rec["iv"], rec["t0"],
                                rec["t1"], rec["imp_wh"], rec["exp_wh"], rec["cnt_imp_wh"],
                                rec["cnt_exp_wh"], flags)
        payload = meterlink.encode(msg, self.key)
        # Queue first, state second: State.recover() repairs a crash between the two.
        self.outbox.put(seq, self.boot, payload)
        self.overflow = False
        st = self.state
        st.seq = seq + 1
        st.iv = rec["iv"]
        st.imp = self.acct.last_imp
        st.exp = self.acct.last_exp
        st.t_ms = self.acct.last_ms
        st.save()
        self.c["records"] += 1
        self._wake_fwd.set()
        return msg

    # -- Modbus ------------------------------------------------------------------------------
    async def poll(self):
        try:
            imp, exp, _power = await self.meter.read()
        except ModbusError:
            self.acct.missed()
            return False
        self.acct.observe(imp, exp, self.board.now_ms())
        return True

    async def _battery_boundary(self):
        """Battery state at a boundary; returns its net export (Wh) since the last one."""
        if self.battery is None:
            return 0
        try:
            s = await self.battery.read()
        except ModbusError:
            self.batt_mark = None
            return 0
        mark = (s["discharged_wh"], s["charged_wh"])
        prev = self.batt_mark
        self.batt_mark = mark
        if prev is None or mark[0] < prev[0] or mark[1] < prev[1]:
            return 0
        return (mark[0] - prev[0]) - (mark[1] - prev[1])

    async def apply_award(self, iv):
        """Follow the award for ``iv`` (the current interval) or fall back to self-consumption.
        The award is the household's net export: the inverter holds the grid exchange there
        (its grid-target mode), so the battery, not the grid, absorbs the forecast's error."""
        got = self.awards.take(iv)
        agent = self.forecast
        if got is not None:
            agent.end = got[1] or None  # the price of this interval, for the profile (0: none)
        if self.battery is None:
            return
        try:
            if got is not None:
                if self.battery.state is None:
                    await self.battery.read()
                # The battery absorbs the forecast's errors (bidding.curve): in the direction
                # of its part of the award, against the forecast the bid carried, or if that is
                # idle in the community's, which the price shows; in both when the community is
                # balanced within itself (the error would otherwise cross the connection point).
                plan = agent.fill
                step = got[0] - plan[1] if plan is not None and plan[0] == iv else 0
                if not step:
                    prefs = self.cfg["prefs"]
                    if got[1] >= prefs["import_price"]:
                        step = 1   # the community imports: more discharge only saves import
                    elif 0 < got[1] <= prefs["feed_in_price"]:
                        step = -1  # it exports: more charge only saves export
                watts = got[0] * 3600 // self.interval_s
                await self.battery.set_power(watts, step)
                self.applied_iv = iv
                # The time in this line lets the bench check no award is applied late.
                self.board.log("award iv %d q %d -> grid %d W at %d"
                               % (iv, got[0], watts, self.board.now_ms()))
            elif self.applied_iv is None or self.applied_iv < iv:
                agent.end = None
                if self.applied_iv != -1:
                    await self.battery.self_consumption()
                    self.applied_iv = -1
        except ModbusError:
            if got is not None:
                self.awards.pending[iv] = got  # try again at the next poll, inside the interval

    # -- bidding -----------------------------------------------------------------------------
    def prepare_bid(self, iv):
        prefs = self.cfg["prefs"]
        agent = self.forecast
        charge = discharge = 0
        lo = hi = prefs["import_wtp"]
        q = 0
        s = self.battery.state if self.battery is not None else None
        if s is not None:
            charge, discharge = bidding.battery_energy(s, s["soc_pct"], self.interval_s)
            lo, hi, q = agent.plan(iv, s, prefs)
        f = agent.get(iv, 2)
        agent.fill = (iv, f)  # what apply_award reckons the award's battery part against
        curve = bidding.curve(f, prefs, charge, discharge, lo, hi, q)
        self.bid_n += 1
        msg = meterlink.bid(self.meter_id, self.kid, self.boot, self.bid_n, iv,
                            self.board.now_ms() // 1000, curve)
        self.bid = (iv, meterlink.encode(msg, self.key))
        self._wake_bid.set()

    # -- the meter loop ------------------------------------------------------------------------
    async def close_interval(self):
        await self.poll()  # a fresh read at the boundary ends the interval
        batt_net = await self._battery_boundary()
        now = self.board.now_ms()
        rec = self.acct.close(now // self.interval_ms, now)
        if rec["iv"] >= self.acct.iv:
            self.acct.iv = rec["iv"] + 1
        self.emit(rec)
        self.closed += 1
        # Collect at a quiet point, once per interval, rather than in the middle of building
        # a message: keeps the heap from fragmenting into pieces too small for a payload.
        self.board.collect()
        self.forecast.update(rec["iv"], rec["exp_wh"] - rec["imp_wh"] - batt_net)
        iv = self.acct.iv
        await self.apply_award(iv)
        self.prepare_bid(iv + 1)
        every = self.cfg["heap_log"]
        if every and self.closed % every == 0:
            self.board.collect()
            self.board.log("HEAP %d %d" % (self.closed, self.board.mem_free()))

    async def meter_loop(self):
        # One read lands just before each boundary and one just after (the close), so the
        # counters interpolated to the boundary rest on two reads close together. The read is
        # stamped when the meter answers: the guard leaves room for a slow answer (a loaded
        # host, a retry) to still land before the boundary; at 1 % of the interval, 100
        # meters on two cores at 240x stamped most of them after it and no interval was exact.
        await self.poll()
        # The battery's fallback from boot, not from the first boundary: an inverter may come
        # up idle (setpoint 0, as the simulated one does), and the household would import what
        # its battery holds for up to an interval (the demo's 100 meters: 1.9 kWh at start).
        await self.apply_award(self.acct.iv)
        limit = self.cfg["max_intervals"]
        while not limit or self.closed < limit:
            poll_ms = self.cfg["poll_s"] * 1000  # each time: a remote command may change it
            guard_ms = min(poll_ms, self.interval_ms // 25)
            now = self.board.now_ms()
            end = (self.acct.iv + 1) * self.interval_ms
            if now >= end:
                await self.close_interval()
            else:
                if self.applied_iv != self.acct.iv and self.acct.iv in self.awards.pending:
                    await self.apply_award(self.acct.iv)
                wake = end - guard_ms if now < end - guard_ms else end
                await self.board.sleep_sim_ms(min(poll_ms, wake - now))
                if self.board.now_ms() < end:
                    await self.poll()
            self.wdt.progress()
        self.done.set()

    # -- uplink ------------------------------------------------------------------------------
    async def forwarder(self):
        window = self.cfg["send_window"]
        while True:
            timeout = int(self.cfg["ack_timeout_s"] * 1000)  # remote settings apply at once
            self._wake_fwd.clear()
            if self.client.connected:
                now = self.board.ticks_ms()
                for seq in list(self.sent):
                    if not self.outbox.has(seq):
                        del self.sent[seq]
                for seq in self.outbox.oldest(window * 2):
                    if len(self.sent) >= window and seq not in self.sent:
                        break
                    t = self.sent.get(seq)
                    if t is not None and self.board.ticks_diff(now, t) < timeout:
                        continue
                    payload = self.outbox.get(seq)
                    if payload is None:
                        continue
                    self.sent[seq] = now
                    await self.client.publish(self.t_reading, payload, 1)
            await self._wake_fwd.wait()

    async def bidder(self):
        gate_ms = self.cfg["gate_closure_s"] * 1000
        while True:
            await self._wake_bid.wait()
            self._wake_bid.clear()
            bid = self.bid
            self.bid = None
            if bid is None:
                continue
            gate = bid[0] * self.interval_ms - gate_ms
            if not self.client.connected or self.board.now_ms() >= gate or \
                    self.client.inflight() >= self.client.window:
                self.c["bid_skip"] += 1  # worthless after gate closure: not kept for later
                continue
            await self.client.publish(self.t_bid, bid[1], 1)
            self.c["bids"] += 1

    def _status_payload(self, online):
        self.status_n += 1
        self.c["q_depth"] = len(self.outbox)
        self.c["heap_free"] = self.board.mem_free()
        msg = meterlink.status(self.meter_id, self.kid, self.boot, self.status_n,
                               self.board.now_ms() // 1000, online,
                               1 if self.board.time_ok() else 0, self.c, self.state.cp)
        return meterlink.encode(msg, self.key)

    def _will(self):
        return (self.t_status, self._status_payload(0), True)

    async def _on_connect(self):
        self._wake_status.set()
        self._wake_fwd.set()
        # Re-send everything unacknowledged now rather than after the ack timeout: acks sent
        # while we were away may be lost with the broker.
        self.sent = {}

    async def status_task(self):
        while True:
            await self._wake_status.wait()
            self._wake_status.clear()
            if self.client.connected:
                try:
                    payload = self._status_payload(1)
                except MemoryError:
                    # No block for it in a fragmented heap: this status is skipped and the
                    # next one tried; the task outlives it (the meter loop has the watchdog).
                    self.board.log("status: skipped, MemoryError")
                    continue
                await self.client.publish(self.t_status, payload, 1, True)

    def _on_message(self, topic, payload):
        if topic == self.t_ack:
            self._on_ack(topic, payload)
        elif topic == self.t_award:
            iv = self.awards.receive(topic, payload, self.board.now_ms())
            if iv is not None:
                self.board.log("award for iv %d at %d" % (iv, self.board.now_ms()))
        elif topic == self.client.subscriptions[3]:
            # As firmware/ota.py below: imported for the command, unloaded after it.
            self.board.collect()
            __import__("firmware.remote", None, None, ("receive",)).receive(self, payload)
        elif topic in self.client.subscriptions[4:]:
            # Imported only now, unloaded when done (names too: firmware/ota.py), into a
            # collected heap: its code and a manifest need blocks of a few KB.
            self.board.collect()
            try:
                __import__("firmware.ota", None, None, ("receive",)).receive(self, payload)
            except MemoryError:
                # Its names need the interpreter's next name pool, 4.5 KB in one block, which
                # a fragmented heap may lack at this offer (a failed import is forgotten): the
                # tool offers again every 10 s.
                self.board.log("ota: no memory for the offer now; the next one is taken")
        else:
            self._witness(topic, payload)

    def _witness(self, topic, payload):
        """Keep the largest ledger checkpoint seen, for the status (docs/architecture.md §9).
        The meter holds no ledger key: it records what it was shown. A smaller tree, or another
        root for the tree it holds, is a rollback or a fork of the log: counted and logged,
        never kept. The note (up to 2 KB) is not kept, only size and root."""
        try:
            msg = meterlink.decode(topic, payload)[2]
        except ProtocolError:
            self.c["cp_malformed"] += 1
            return
        kept = self.state.cp
        if kept is None or msg["size"] > kept["size"]:
            self.state.cp = {"size": msg["size"], "root": msg["root"]}
        elif msg["size"] < kept["size"] or msg["root"] != kept["root"]:
            self.c["cp_rollback"] += 1
            self.board.log("checkpoint of %d leaves after %d: rollback or fork"
                           % (msg["size"], kept["size"]))

    def _on_ack(self, topic, payload):
        try:
            _c, _m, msg, _b = meterlink.decode(topic, payload, self._keys)
        except ProtocolError:
            self.c["rejected"] += 1
            return
        seq = msg["seq"]
        if self.outbox.ack(seq, msg["boot"]):
            self.sent.pop(seq, None)
            if msg["res"] == meterlink.ACK_STORED or msg["res"] == meterlink.ACK_DUPLICATE:
                self.c["acked"] += 1
                if self.c.get("ota_trial_n") and msg["boot"] == self.boot:
                    # A new bundle's first reading stored: keep it (firmware/ota.py).
                    __import__("firmware.ota", None, None, ("ack",)).ack(self)
            else:
                self.c["rejected"] += 1
                self.board.log("reading %d rejected: %s" % (seq, msg["res"]))
            if self.c.get("cfg_waiting") and not len(self.outbox):
                # A key rotation or reset waits for an empty queue (firmware/remote.py).
                __import__("firmware.remote", None, None, ("ack",)).ack(self)
            self._wake_fwd.set()

    def _keys(self, meter, kid):
        return self.key if meter == self.meter_id and kid == self.kid else None

    async def ticker(self):
        """Wake the forwarder twice a second (it re-sends what was not acknowledged in time) and
        the status task every status_s; sync the clock (boards: NTP) every 30 s until it
        succeeds, then every ntp_s (default hourly: an ESP32 RTC drifts seconds a day)."""
        last = synced = self.board.ticks_ms()
        sync_every = 0
        while True:
            period = self.cfg["status_s"] * 1000
            now = self.board.ticks_ms()
            if self.board.ticks_diff(now, synced) >= sync_every:
                synced = now
                ok = await self.board.sync_time()
                sync_every = (self.cfg.get("ntp_s") or 3600) * 1000 if ok else 30000
            if self.board.ticks_diff(now, last) >= period:
                last = now
                self._wake_status.set()
            self._wake_fwd.set()
            await self.board.sleep_ms(500)

    # -- run ---------------------------------------------------------------------------------
    async def run(self):
        self.restore()
        tasks = [asyncio.create_task(t) for t in (
            self.client.run(), self.forwarder(), self.bidder(), self.status_task(), self.ticker(),
            self.wdt.run())]
        if self.c.get("ota_trial_n"):  # a new bundle on trial: rolls back unless acknowledged
            tasks.append(asyncio.create_task(
                __import__("firmware.ota", None, None, ("run",)).run(self)))
        meter = asyncio.create_task(self.meter_loop())
        try:
            await self.done.wait()
            await self.drain()
        finally:
            meter.cancel()
            for t in tasks:
                t.cancel()
            await self.client.disconnect()

    async def drain(self, timeout_ms=30000):
        """At a test's max_intervals: give the queue time to empty before stopping."""
        start = self.board.ticks_ms()
        while len(self.outbox) and self.board.ticks_diff(self.board.ticks_ms(), start) < timeout_ms:
            await self.board.sleep_ms(50)
