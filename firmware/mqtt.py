# A small asyncio MQTT 3.1.1 client (OASIS Standard, 29 October 2014), written for the meter:
# QoS 0/1 publish with retransmission, QoS 1 subscriptions, keepalive, a retained last will,
# reconnect with exponential backoff and jitter, username/password, optional TLS.
#
# The MicroPython libraries either block (umqtt) or keep nothing across outages; this one runs
# on asyncio streams (non-blocking sockets: the event loop never waits on the network) and
# keeps unacknowledged QoS 1 messages across reconnects. Section numbers refer to the spec.
import asyncio

from protocols import const

# Packet types (2.2.1) and flags. Private consts: MicroPython's compiler puts the numbers in
# the code, so they cost neither names nor module entries on the device.
_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)   # 3.8.1: bits 3-0 of a SUBSCRIBE fixed header are reserved as 0010
_SUBACK = const(0x90)
_PINGREQ = const(0xC0)
_DISCONNECT = const(0xE0)
_DUP = const(0x08)

_MAX_PACKET = const(8192)  # larger incoming packets are an abuse on this device: disconnect


def _utf8(s):
    # 1.5.3: UTF-8 string, two-byte big-endian length prefix.
    b = s.encode() if type(s) is str else s
    return bytes((len(b) >> 8, len(b) & 0xFF)) + b


def _remaining(n):
    # 2.2.3: remaining length, 7 bits per byte, continuation in the high bit, at most 4 bytes.
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes((first,)) + _remaining(len(body)) + body


def connect_packet(client_id, keepalive_s, clean, user, password, will):
    # 3.1.2: protocol name "MQTT", level 4, connect flags, keepalive.
    flags = 0x02 if clean else 0
    payload = _utf8(client_id)
    if will is not None:
        topic, message, retain = will
        flags |= 0x04 | 0x08  # will flag, will QoS 1
        if retain:
            flags |= 0x20
        payload += _utf8(topic) + _utf8(message)
    if user is not None:
        flags |= 0x80
        payload += _utf8(user)
        if password is not None:
            flags |= 0x40
            payload += _utf8(password)
    var = _utf8("MQTT") + bytes((4, flags, keepalive_s >> 8, keepalive_s & 0xFF))
    return packet(_CONNECT, var + payload)


def publish_packet(topic, payload, qos, retain, pid, dup):
    first = _PUBLISH | (qos << 1) | (1 if retain else 0) | (_DUP if dup else 0)
    var = _utf8(topic)
    if qos:
        var += bytes((pid >> 8, pid & 0xFF))
    # One copy of the payload. (Header and payload as two writes would cost no copy, but two
    # TCP segments: Nagle holds the second until the first is acknowledged, tens of ms.)
    return b"".join((bytes((first,)), _remaining(len(var) + len(payload)), var, payload))



def _tls_context(ca):
    # The same on every runtime: a client context that verifies the broker against the CA file
    # (CPython's TLS_CLIENT also checks the host name: the hal's open_connection passes it).
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cafile=ca)
    return ctx

class Client:
    """``on_message(topic, payload)`` is called for each received PUBLISH; keep it short.
    ``on_connect()`` (a coroutine function) runs after every successful (re)connect."""

    def __init__(self, board, cfg, client_id, will=None, on_message=None, on_connect=None,
                 counters=None):
        self.board = board
        self.host = cfg["host"]
        self.port = cfg["port"]
        self.user = cfg.get("user")
        self.password = cfg.get("password")
        self.keepalive_s = cfg.get("keepalive_s", 30)
        self.retry_ms = cfg.get("retry_s", 10) * 1000
        self.backoff_max_ms = cfg.get("backoff_max_s", 30) * 1000
        self.tls = cfg.get("tls")
        self.ca = cfg.get("ca")
        self.client_id = client_id
        self.will = will                   # function returning (topic, payload, retain)
        self.subscriptions = []            # topics subscribed at QoS 1 after every connect
        self.on_message = on_message
        self.on_connect = on_connect
        self.c = counters if counters is not None else {}
        for k in ("reconnects", "mqtt_retx"):
            self.c.setdefault(k, 0)
        self.connected = False
        self.window = 8
        self._pid = 0
        self._inflight = {}                # pid -> [topic, payload, retain, ticks sent]
        self._r = None
        self._w = None
        self._lock = asyncio.Lock()
        self._last_tx = 0
        self._last_rx = 0
        self._suback = None
        self._stop = False

    # -- sending -----------------------------------------------------------------------------
    def _next_pid(self):
        # 2.3.1: non-zero 16-bit packet identifier, unused among messages in flight.
        while True:
            self._pid = self._pid % 0xFFFF + 1
            if self._pid not in self._inflight:
                return self._pid

    async def _send(self, data):
        w = self._w
        if w is None:
            raise OSError("not connected")
        async with self._lock:
            w.write(data)
            await asyncio.wait_for(w.drain(), 10)
        self._last_tx = self.board.ticks_ms()

    def inflight(self):
        return len(self._inflight)

    async def publish(self, topic, payload, qos=1, retain=False):
        """QoS 0: sent now if connected (else dropped, returns False).
        QoS 1: kept until PUBACK, re-sent after retry_s and after every reconnect (4.4)."""
        if qos == 0:
            if not self.connected:
                return False
            try:
                await self._send(publish_packet(topic, payload, 0, retain, 0, False))
                return True
            except Exception:  # noqa: BLE001 - the reader task notices the dead link
                return False
        while len(self._inflight) >= self.window:
            await self.board.sleep_ms(20)
        pid = self._next_pid()
        self._inflight[pid] = [topic, payload, retain, self.board.ticks_ms()]
        if self.connected:
            try:
                await self._send(publish_packet(topic, payload, 1, retain, pid, False))
            except Exception:  # noqa: BLE001 - kept in flight, re-sent after reconnect
                pass
        return True

    async def _retransmit(self, expired):
        # expired: only the messages whose retry_s is up (else all, after a reconnect)
        now = self.board.ticks_ms()
        for pid in list(self._inflight):
            entry = self._inflight.get(pid)
            if entry is None:
                continue
            if expired and self.board.ticks_diff(now, entry[3]) < self.retry_ms:
                continue
            entry[3] = now
            self.c["mqtt_retx"] += 1
            # 4.4 / 3.3.1.1: a re-delivered PUBLISH keeps its packet identifier and sets DUP.
            await self._send(publish_packet(entry[0], entry[1], 1, entry[2], pid, True))

    # -- receiving ---------------------------------------------------------------------------
    async def _read_packet(self):
        r = self._r
        head = await r.readexactly(1)
        n = 0
        shift = 0
        for _ in range(4):
            b = (await r.readexactly(1))[0]
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        else:
            raise OSError("bad remaining length")
        if n > _MAX_PACKET:
            raise OSError("packet too large")
        body = await r.readexactly(n) if n else b""
        self._last_rx = self.board.ticks_ms()
        return head[0], body

    def _handle(self, first, body):
        kind = first & 0xF0
        if kind == _PUBLISH:
            qos = (first >> 1) & 3
            tlen = (body[0] << 8) | body[1]
            topic = bytes(body[2:2 + tlen]).decode()
            pos = 2 + tlen
            pid = 0
            if qos:
                pid = (body[pos] << 8) | body[pos + 1]
                pos += 2
            if self.on_message is not None:
                try:
                    self.on_message(topic, bytes(body[pos:]))
                except Exception as e:  # noqa: BLE001 - one bad message must not kill the link
                    self.board.log("mqtt: on_message failed: " + repr(e))
            # 4.3.2: QoS 1 receiver answers PUBACK with the same identifier (after handling,
            # so an unhandled message is redelivered). We subscribe at QoS 1 only.
            return packet(_PUBACK, bytes((pid >> 8, pid & 0xFF))) if qos else None
        if kind == _PUBACK:
            pid = (body[0] << 8) | body[1]
            self._inflight.pop(pid, None)
        elif kind == _SUBACK:
            self._suback = bytes(body[2:])
        # PINGRESP: _last_rx already updated. Anything else from a server is ignored.
        return None

    async def _reader(self):
        while True:
            first, body = await self._read_packet()
            reply = self._handle(first, body)
            if reply is not None:
                await self._send(reply)

    async def _keepalive(self):
        # 3.1.2.10: send PINGREQ when idle for half the keepalive; a server silent for 1.5x
        # the keepalive is gone (3.1.2.10 says the same of clients). Runs for the client's
        # life: a dead link is closed here, which ends the reader (its socket raises), and
        # run() reconnects.
        ka = self.keepalive_s * 1000
        while True:
            await self.board.sleep_ms(min(500, ka // 4))
            if not self.connected:
                continue
            now = self.board.ticks_ms()
            try:
                # A lost Wi-Fi link is noticed here, not after 1.5 keepalives of silence.
                if not await self.board.network_up():
                    raise OSError("network down")
                if self.board.ticks_diff(now, self._last_rx) > ka + ka // 2:
                    raise OSError("keepalive timeout")
                if self.board.ticks_diff(now, self._last_tx) >= ka // 2:
                    await self._send(bytes((_PINGREQ, 0)))
                await self._retransmit(True)
            except Exception as e:  # noqa: BLE001 - whatever failed, the link is unusable
                self.board.log("mqtt: connection lost: " + repr(e))
                await self._drop()

    # -- connection --------------------------------------------------------------------------
    async def _connect(self):
        if self.tls is True:
            # One context for the client's life: a new SSLContext per reconnect would load
            # the CA again and, on the device, fragment the heap with mbedTLS state.
            self.tls = _tls_context(self.ca)
        self._r, self._w = await asyncio.wait_for(
            self.board.open_connection(self.host, self.port, self.tls or None), 15)
        will = self.will() if self.will is not None else None
        # Clean session 0 (3.1.2.4): the broker keeps our subscriptions and queues acks and
        # awards sent while we are away; we re-send our unacknowledged QoS 1 messages.
        self._last_rx = self._last_tx = self.board.ticks_ms()
        await self._send(connect_packet(self.client_id, self.keepalive_s, False, self.user,
                                        self.password, will))
        first, body = await asyncio.wait_for(self._read_packet(), 15)
        if first != _CONNACK or len(body) != 2:
            raise OSError("no CONNACK")
        if body[1] != 0:
            # 3.2.2.3: 1 version, 2 identifier, 3 unavailable, 4 credentials, 5 not authorised.
            raise OSError("connection refused, code " + str(body[1]))
        for topic in self.subscriptions:
            self._suback = None
            pid = self._next_pid()
            sub = bytes((pid >> 8, pid & 0xFF)) + _utf8(topic) + b"\x01"  # at QoS 1
            await self._send(packet(_SUBSCRIBE, sub))
            for _ in range(15000 // 20):
                if self._suback is not None:
                    break
                first, body = await asyncio.wait_for(self._read_packet(), 15)
                reply = self._handle(first, body)
                if reply is not None:
                    await self._send(reply)
            if self._suback is None or self._suback[0] == 0x80:
                raise OSError("subscription refused")
        self.connected = True
        await self._retransmit(False)

    async def _drop(self):
        self.connected = False
        w = self._w
        self._r = self._w = None
        if w is not None:
            try:
                w.close()
                # MicroPython's Stream.close() does nothing (extmod/asyncio/stream.py): only
                # wait_closed() closes the socket. Without it every reconnect leaks an lwIP
                # socket (an ESP32 has a handful) and, with TLS, the mbedTLS buffers.
                await asyncio.wait_for(w.wait_closed(), 5)
            except Exception:  # noqa: BLE001 - a broken socket is closed all the same
                pass

    async def run(self):
        """Connect, serve, and reconnect forever (until disconnect())."""
        pinger = asyncio.create_task(self._keepalive())
        failures = 0
        try:
            while not self._stop:
                try:
                    await self.board.network_up()
                    await self._connect()
                    failures = 0
                    if self.on_connect is not None:
                        await self.on_connect()
                    await self._reader()
                except Exception as e:  # noqa: BLE001 - any failure means: drop and reconnect
                    if self.connected or failures == 0:
                        self.board.log("mqtt: connection lost: " + repr(e))
                await self._drop()
                if self._stop:
                    break
                self.c["reconnects"] += 1
                failures += 1
                await self.board.sleep_ms(self.backoff_ms(failures))
        finally:
            pinger.cancel()

    def backoff_ms(self, n):
        """The wait after ``n`` failures in a row: exponential backoff from 0.5 s, capped, with
        +-25 % jitter so a community's meters do not all reconnect in the same instant after a
        broker restart. (``n``, not a new name: every argument name costs the device one.)"""
        base = 500 << min(n - 1, 16)
        if base > self.backoff_max_ms:
            base = self.backoff_max_ms
        jitter = (self.board.randbits(16) * (base // 2)) >> 16
        return base - base // 4 + jitter

    async def disconnect(self):
        self._stop = True
        if self.connected:
            try:
                await self._send(bytes((_DISCONNECT, 0)))  # 3.14: will is discarded
            except Exception:  # noqa: BLE001
                pass
        await self._drop()

